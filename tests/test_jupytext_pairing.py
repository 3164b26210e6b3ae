"""Paired notebooks: jupytext.toml pairs each chapter's .py with an .ipynb, both ways.

The test copies the repository's jupytext.toml and a chapter source to a temporary folder,
syncs, edits the .ipynb as a researcher would in JupyterLab, syncs again and reads the
change back from the .py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JUPYTEXT = Path(sys.executable).parent / "jupytext"
CHAPTER = ROOT / "notebooks" / "02_dynamics.py"


def _sync(path: Path) -> None:
    subprocess.run([str(JUPYTEXT), "--sync", str(path)], cwd=path.parent.parent, check=True,
                   capture_output=True, text=True)


def test_the_generated_notebooks_stay_out_of_git():
    ignored = subprocess.run(["git", "check-ignore", "-q", "notebooks/02_dynamics.ipynb"],
                             cwd=ROOT)
    assert ignored.returncode == 0, "add notebooks/*.ipynb to .gitignore"
    config = (ROOT / "_config.yml").read_text()
    assert re.search(r"(?m)^\s+- notebooks$", config), "the book must exclude notebooks/"


def test_a_chapter_syncs_both_ways_with_its_notebook(tmp_path):
    shutil.copy(ROOT / "jupytext.toml", tmp_path / "jupytext.toml")
    (tmp_path / "notebooks").mkdir()
    script = tmp_path / "notebooks" / CHAPTER.name
    paired = CHAPTER.read_text()
    assert "formats:" not in paired.split("# ---")[1], "a formats: line in the header " \
        "overrides jupytext.toml; leave pairing to the config"
    script.write_text(paired)
    notebook = script.with_suffix(".ipynb")

    _sync(script)
    assert notebook.exists(), "jupytext.toml did not pair the chapter with an .ipynb"
    assert script.read_text() == paired  # no version or metadata lines are added
    _sync(script)
    assert script.read_text() == paired

    content = json.loads(notebook.read_text())
    markdown = next(cell for cell in content["cells"] if cell["cell_type"] == "markdown")
    markdown["source"] = "".join(markdown["source"]) + "\n\nAn edit made in JupyterLab."
    code = next(cell for cell in content["cells"] if cell["cell_type"] == "code"
                and "parameters" not in cell["metadata"].get("tags", []))
    code["source"] = "".join(code["source"]) + "\nedited_in_lab = 1"
    notebook.write_text(json.dumps(content))
    _sync(notebook)

    text = script.read_text()
    assert "# An edit made in JupyterLab." in text and "\nedited_in_lab = 1\n" in text
    assert len(text.splitlines()) == len(paired.splitlines()) + 3
