# The project's commands. `make test` and `make book` create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PARAMS ?=
EXTRAS ?= test,book

.PHONY: test lint book notebooks execute-one check-html publish clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check analysis_utils tests benchmarks notebooks examples

test: $(STAMP) lint
	$(PY) -m pytest -q

# ---------------------------------------------------------------------------- the book
# make book PARAMS="-p weights untrained -p n_perm 1000": each notebooks/NN_*.py becomes a
# notebook (jupytext, only when the .py changed), the features of every model are extracted once
# into the feature cache (prefill), then papermill executes the chapters side by side
# (BOOK_JOBS at a time, each with CHAPTER_THREADS torch threads) into book/notebooks/ with
# PARAMS; papermill's injected parameters cell is folded like every code cell (hide-input), a
# check fails on any executed notebook without outputs or with an unfolded code cell, then
# Jupyter Book builds the HTML (-W -n: warnings fail). Each chapter writes its result tables
# (CSV) to book/_build/html/results/.
CHAPTER_SOURCES := $(sort $(wildcard notebooks/[0-9][0-9]_*.py))
CHAPTERS := $(patsubst notebooks/%.py,book/notebooks/%.ipynb,$(CHAPTER_SOURCES))
CHAPTER_NAMES := $(patsubst notebooks/%.py,%,$(CHAPTER_SOURCES))
SOURCE_NOTEBOOKS := $(patsubst notebooks/%.py,book/notebooks/_sources/%.ipynb,$(CHAPTER_SOURCES))
BOOK_JOBS ?= 4
CHAPTER_THREADS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); t=$$((n / $(BOOK_JOBS))); \
  echo $$((t > 0 ? t : 1)))
BOOK_HTML := book/_build/html
# plug-in modules (-p plugins examples.conv_gru) import from the repository root in every step
BOOK_PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))

book/notebooks/_sources/%.ipynb: notebooks/%.py $(STAMP)
	@mkdir -p $(@D)
	$(VENV)/bin/jupytext --quiet --to ipynb $< -o $@

notebooks: $(STAMP) $(SOURCE_NOTEBOOKS)
	PYTHONPATH="$(BOOK_PYTHONPATH)" $(PY) -m analysis_utils.build preflight $(PARAMS)
	PYTHONPATH="$(BOOK_PYTHONPATH)" $(PY) -m analysis_utils.build prefill $(SOURCE_NOTEBOOKS) $(PARAMS)
	printf '%s\n' $(CHAPTER_NAMES) | xargs -P $(BOOK_JOBS) -I NAME \
	  $(MAKE) --no-print-directory execute-one CHAPTER=NAME PARAMS='$(PARAMS)'
	$(PY) -m analysis_utils.build fold-injected $(CHAPTERS)
	$(PY) -m analysis_utils.build check-outputs $(CHAPTERS)

# Execute one chapter (used by `notebooks`): make execute-one CHAPTER=02_dynamics
execute-one:
	@echo "executing $(CHAPTER)"
	OMP_NUM_THREADS=$(CHAPTER_THREADS) PYTHONPATH="$(BOOK_PYTHONPATH)" \
	  $(VENV)/bin/papermill --no-progress-bar \
	  --log-level WARNING -k python3 --cwd book/notebooks \
	  book/notebooks/_sources/$(CHAPTER).ipynb book/notebooks/$(CHAPTER).ipynb $(PARAMS)

book: notebooks
	$(VENV)/bin/jupyter-book build . --path-output book -W -n --keep-going --quiet
	@echo "The book: $(CURDIR)/$(BOOK_HTML)/index.html"

check-html: $(STAMP)
	$(PY) -m analysis_utils.build check-html $(BOOK_HTML) screenshots

# Publish the built book by hand to the gh-pages branch (make book first); the workflow
# .github/workflows/book.yml deploys it to GitHub Pages on every push to main instead.
publish: $(STAMP)
	@test -f $(BOOK_HTML)/index.html || { echo "No built book at $(BOOK_HTML); run make book first." >&2; exit 2; }
	$(VENV)/bin/ghp-import --no-jekyll --push --force --message "Publish the book" $(BOOK_HTML)

clean:
	rm -rf book/_build book/notebooks .pytest_cache .ruff_cache

# ---------------------------------------------------------------------------- the mini zoo
# make zoo: train the seven mini models on Tiny-ImageNet-100. ZOO_DATA holds val-probe100.tar.gz
# and the train-probe100-k.tar.gz archives (ZOO_SHARDS). No venv prerequisite, so that a GPU
# machine's own python can run it offline: make zoo PY=python3.
#
# ZOO_DEVICE=cuda (default): one process; each model gets ZOO_BUDGET seconds of training and its
#   epochs are chosen from its measured speed (at most ZOO_MAX_EPOCHS).
# ZOO_DEVICE=cpu: the shipped zoo's recipe (--recipe cpu-zoo: per-model epochs, batch size,
#   learning rate, bf16 autocast / torch.compile where they measurably help). ZOO_LANES lists
#   the models of each process, lanes separated by spaces; the lanes run side by side with
#   ZOO_THREADS torch threads each (two 1-thread processes train ~1.4x more images per second
#   than one 2-thread process on 2 cores); ZOO_JOBS lanes at a time. Add ZOO_FLAGS=--skip-existing to go on with the next
#   models, ZOO_FLAGS=--resume to continue an interrupted model from its last epoch.
ZOO_DATA ?= ../shared/data/tiny-imagenet-200
ZOO_DEVICE ?= cuda
ZOO_OUT ?= analysis_utils/zoo/mini
ZOO_LOG ?= $(ZOO_OUT)/train.log
ZOO_BUDGET ?= 45
ZOO_MAX_EPOCHS ?= 60
ZOO_FLAGS ?=
ZOO_LANES ?= bl,cornet_rt convrnn,alexnet,b lrm3 lra3
ZOO_THREADS ?= 1
ZOO_JOBS ?= 2
ifeq ($(ZOO_DEVICE),cpu)
ZOO_SHARDS ?= 0,1,2,3
else
ZOO_SHARDS ?= 0,1,2
endif
ZOO_TRAIN = PYTHONUNBUFFERED=1 $(PY) -m analysis_utils train --archives $(ZOO_DATA) \
  --shards $(ZOO_SHARDS) --out $(ZOO_OUT) --seed 0

.PHONY: zoo
zoo:
ifeq ($(ZOO_DEVICE),cpu)
	mkdir -p $(ZOO_OUT)
	printf '%s\n' $(ZOO_LANES) | xargs -P $(ZOO_JOBS) -I LANE sh -c 'lane=$$(echo LANE | tr , +); \
	  $(ZOO_TRAIN) --model LANE --device cpu --recipe cpu-zoo --threads $(ZOO_THREADS) \
	  --log $(ZOO_OUT)/train-$$lane.log $(ZOO_FLAGS) 2> $(ZOO_OUT)/train-$$lane.progress'
else
	$(ZOO_TRAIN) --model all --log $(ZOO_LOG) --device $(ZOO_DEVICE) \
	  --budget $(ZOO_BUDGET) --max-epochs $(ZOO_MAX_EPOCHS) $(ZOO_FLAGS)
endif
