# The project's commands. `make test` and `make book` create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PARAMS ?=
EXTRAS ?= test,book

.PHONY: test lint book notebooks check-html clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check analysis_utils tests benchmarks notebooks

test: $(STAMP) lint
	$(PY) -m pytest -q

clean:
	rm -rf book/_build book/notebooks .pytest_cache .ruff_cache
