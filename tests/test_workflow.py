"""The GitHub Actions workflow that builds the book and deploys it to GitHub Pages.

actionlint (a static checker for workflow files: syntax, expressions, the inputs of known
actions, deprecated action runtimes) must accept it; it must run the make targets of .ci/run
with the same book parameters, and deploy the HTML folder that ``make book`` writes.
``make publish`` is the by-hand route to the same place (ghp-import to the gh-pages branch).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"
ACTIONLINT = Path(sys.executable).parent / "actionlint"


def _actionlint(path: Path) -> subprocess.CompletedProcess:
    """actionlint on ``path``, without the optional shellcheck and pyflakes (so the result does
    not depend on what else is installed)."""
    return subprocess.run([str(ACTIONLINT), "-shellcheck=", "-pyflakes=", "-no-color",
                           "-oneline", str(path)], capture_output=True, text=True, timeout=60)


def _workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def _make_commands(lines) -> list[str]:
    """Each ``make ...`` command in ``lines`` of shell, as a normalised string."""
    commands = []
    for line in lines:
        line = line.strip()
        if line.startswith("make "):
            commands.append(" ".join(shlex.split(line)))
    return commands


def test_actionlint_accepts_the_workflow():
    result = _actionlint(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("old, new, message", [
    ("needs: build", "needs: biuld", 'needs job "biuld" which does not exist'),
    ("actions/deploy-pages@v5", "actions/deploy-pages@v4", 'runtime "node20" is deprecated'),
    ("path: book/_build/html", "paht: book/_build/html", 'input "paht" is not defined'),
])
def test_actionlint_catches_a_broken_workflow(tmp_path, old, new, message):
    text = WORKFLOW.read_text()
    assert old in text
    broken = tmp_path / "book.yml"
    broken.write_text(text.replace(old, new))
    result = _actionlint(broken)
    assert result.returncode == 1 and message in result.stdout, result.stdout + result.stderr


def test_the_workflow_runs_the_make_targets_of_ci_run():
    ci = _make_commands((ROOT / ".ci" / "run").read_text().splitlines())
    steps = [step for job in _workflow()["jobs"].values() for step in job["steps"]]
    workflow = _make_commands(line for step in steps if "run" in step
                              for line in step["run"].splitlines())
    assert ci, ".ci/run runs no make target"
    assert [c for c in workflow if not c.startswith("make venv")] == ci


def test_the_workflow_deploys_the_book_html_to_pages():
    makefile = (ROOT / "Makefile").read_text()
    html = re.search(r"(?m)^BOOK_HTML := (\S+)$", makefile).group(1)
    jobs = _workflow()["jobs"]
    uploads = [step for step in jobs["build"]["steps"]
               if step.get("uses", "").startswith("actions/upload-pages-artifact@")]
    assert [step["with"]["path"] for step in uploads] == [html]
    deploy = jobs["deploy"]
    assert deploy["needs"] == "build" and deploy["environment"]["name"] == "github-pages"
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert [s["uses"].split("@")[0] for s in deploy["steps"]] == ["actions/deploy-pages"]
    assert "refs/heads/main" in deploy["if"]  # pull requests build, only main deploys


def test_make_publish_pushes_the_built_html_with_ghp_import():
    dry = subprocess.run(["make", "-n", "publish"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert dry.returncode == 0, dry.stderr
    command = next(line for line in dry.stdout.splitlines() if "ghp-import" in line)
    assert shlex.split(command)[1:] == ["--no-jekyll", "--push", "--force", "--message",
                                        "Publish the book", "book/_build/html"]
    assert (Path(sys.executable).parent / "ghp-import").exists()
