"""The findings chapter (notebooks/05_findings.py) under papermill, as make book runs it: small
parameters on the real tiny probe, untrained weights. It must execute with outputs in every
cell, write the claims table (CSV, JSON, sidecar) where the built book serves it, link each
claim to its chapter, and say that untrained verdicts mean nothing yet, in sentences that are
the CSV's verdicts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from analysis_utils import build, claims

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = "05_findings"


def _source(tmp_path: Path) -> Path:
    import jupytext

    source = tmp_path / f"{CHAPTER}.src.ipynb"
    jupytext.write(jupytext.read(ROOT / "notebooks" / f"{CHAPTER}.py"), source)
    return source


def _run(source: Path, output: Path, cwd: Path, *pairs: str) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).parent / "papermill"), "--no-progress-bar",
               "--log-level", "WARNING", "-k", "python3", "--cwd", str(cwd), str(source),
               str(output), *pairs]
    return subprocess.run(command, capture_output=True, text=True)


@pytest.mark.slow
def test_the_findings_chapter_runs_under_papermill(tmp_path, real_tiny_dir, monkeypatch):
    html = tmp_path / "_build" / "html"
    monkeypatch.setenv("ANALYSIS_UTILS_RESULTS", str(html / "results"))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    source = _source(tmp_path)
    output = tmp_path / f"{CHAPTER}.ipynb"
    common = ["-p", "images_per_category", "4", "-p", "device", "cpu",
              "-p", "data_dir", str(real_tiny_dir), "-p", "cache_dir", str(tmp_path / "cache")]
    result = _run(source, output, tmp_path, "-p", "weights", "untrained", "-p", "n_perm", "20",
                  "-p", "n_boot", "20", "-p", "untrained_seeds", "0,1", *common)
    assert result.returncode == 0, result.stderr[-2000:]
    assert build.check_outputs([output]) == []
    text = output.read_text()
    assert "UNTRAINED" in text and "image/png" in text

    # the claims table, where the built book serves it, with its sidecar
    folder = html / "results"
    table = pd.read_csv(folder / f"{CHAPTER}_claims.csv")
    assert list(table["id"]) == claims.ids()
    assert set(table["verdict"]) <= {*claims.VERDICTS, claims.NOT_EVALUATED}
    assert (table["untrained_seeds"] == "0,1").all()
    records = json.loads((folder / f"{CHAPTER}_claims.json").read_text())
    assert [r["id"] for r in records] == claims.ids()
    sidecar = json.loads((folder / f"{CHAPTER}_claims.meta.json").read_text())
    parameters = sidecar["parameters"]
    assert parameters["n_boot"] == 20 and parameters["untrained_seeds"] == [0, 1]
    assert parameters["reference_images_per_category"] == 4  # the chapter's own images
    assert parameters["chapter"]["weights"] == "untrained"
    assert parameters["chapter"]["n_perm"] == 20
    assert sidecar["weights"]["bl"] == {"kind": "untrained", "seed": 0}
    assert sidecar["probes"][0]["images_per_category"] == 4

    # the page: links to the result files (relative to book/notebooks) and to the chapters
    assert f"../../results/{CHAPTER}_claims.csv" in text
    for claim in claims.CLAIMS:
        assert claims.chapter_href(claim.chapter, claim.section) in text
    # the discussion is drawn from the written verdicts and says they mean nothing yet
    notebook = nbformat.read(output, as_version=4)
    last = [c for c in notebook.cells if c.cell_type == "code"][-1]
    shown = last.outputs[0]["data"]["text/markdown"]
    assert shown == claims.discussion(table, scale="mini", weights="untrained", probe="tiny")
    assert "mean nothing yet" in shown

    # a run without any of the study's models gets one sentence
    bad = _run(source, tmp_path / "bad.ipynb", tmp_path, "-p", "plugins", "examples.conv_gru",
               "-p", "models", "conv_gru", "-p", "weights", "untrained", *common)
    assert bad.returncode != 0
    assert "The study's claims concern its models" in bad.stderr + bad.stdout
