"""pyproject.toml and environment.yml must pin the same packages at the same versions."""

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_pins(include_extras=("test", "book", "lab")) -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in include_extras:
        specs += project["optional-dependencies"][extra]
    return dict(spec.split("==") for spec in specs)


def _environment_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "environment.yml").read_text().splitlines():
        match = re.match(r"^\s+-\s+([A-Za-z0-9_.\-]+)==(\S+)\s*$", line)
        if match:
            pins[match.group(1)] = match.group(2)
    return pins


def test_every_pyproject_pin_is_exact():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        specs += extra
    loose = [spec for spec in specs if "==" not in spec]
    assert not loose, f"unpinned dependencies: {loose}"


def test_environment_yml_matches_pyproject():
    assert _environment_pins() == _pyproject_pins()
