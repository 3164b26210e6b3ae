"""Tests for analysis_utils.results: the fixed float format, byte-identical files for identical
input, the sidecar's provenance, and one sentence per bad input."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis_utils import results
from analysis_utils.errors import AnalysisUtilsError


def _frame():
    return pd.DataFrame({
        "Model": ["LRM3", "BL", "CORnet-RT"],
        "beta": [-0.031038123456, 0.1 + 0.2, float("nan")],
        "p": [1.339442e-48, 0.0, -0.0],
        "n": np.array([5000, 5000, 4999], dtype=np.int64),
        "significant": [True, False, True],
        "note": ["", "a, quoted \"note\"", None],
    })


def _extraction():
    return {
        "lrm3": {"weights": {"kind": "trained", "sha256": "ab" * 32},
                 "probe": {"name": "tiny", "content_hash": "cd" * 32, "n_images": 5000,
                           "n_categories": 100, "images_per_category": 50,
                           "source": "/some/user/folder"}},
        "bl": {"weights": {"kind": "file", "sha256": "ef" * 32, "path": "/tmp/bl.h5"},
               "probe": {"name": "tiny", "content_hash": "cd" * 32, "n_images": 5000,
                         "n_categories": 100, "images_per_category": 50,
                         "source": "/another/folder"}},
    }


def test_floats_have_one_fixed_format():
    assert results.format_float(0.1 + 0.2) == "0.3"
    assert results.format_float(-0.031038123456) == "-0.0310381"
    assert results.format_float(1.339442e-48) == "1.33944e-48"
    assert results.format_float(-0.0) == "0"
    assert results.format_float(float("nan")) == "NaN"
    assert results.format_float(float("-inf")) == "-inf"
    assert results.format_float(np.float32(57.36)) == "57.36"  # float32 noise rounded away
    assert results.format_float(2 / 3, significant=3) == "0.667"


def test_csv_text_is_the_documented_layout():
    text = results.format_csv(_frame())
    assert text == (
        "Model,beta,p,n,significant,note\n"
        "LRM3,-0.0310381,1.33944e-48,5000,True,\n"
        'BL,0.3,0,5000,False,"a, quoted ""note"""\n'
        "CORnet-RT,NaN,0,4999,True,NaN\n"
    )
    back = pd.read_csv(pd.io.common.StringIO(text))
    assert back["beta"].iloc[0] == pytest.approx(-0.0310381)
    assert np.isnan(back["beta"].iloc[2])


def test_identical_input_gives_byte_identical_files(tmp_path):
    parameters = {"scale": "mini", "models": ("lrm3", "bl"), "n_perm": np.int64(1000),
                  "data_dir": Path("/data"), "alpha": float("nan")}
    written = [results.write_table(_frame(), "02_dynamics", "table2", parameters=parameters,
                                   extraction=_extraction(), directory=tmp_path / name,
                                   records=True)
               for name in ("first", "second")]
    for attribute in ("csv", "json", "sidecar"):
        first, second = (getattr(w, attribute) for w in written)
        assert first.name == second.name
        assert first.read_bytes() == second.read_bytes()
    assert written[0].csv.name == "02_dynamics_table2.csv"
    assert written[0].sidecar.name == "02_dynamics_table2.meta.json"
    # a different number changes the CSV and its recorded hash
    changed = _frame()
    changed.loc[0, "beta"] = -0.0311
    third = results.write_table(changed, "02_dynamics", "table2", parameters=parameters,
                                extraction=_extraction(), directory=tmp_path / "third")
    assert third.csv.read_bytes() != written[0].csv.read_bytes()
    assert json.loads(third.sidecar.read_text())["csv_sha256"] != \
        json.loads(written[0].sidecar.read_text())["csv_sha256"]


def test_sidecar_records_parameters_weights_probe_and_versions(tmp_path):
    parameters = {"scale": "mini", "models": ("lrm3", "bl"), "n_perm": np.int64(1000),
                  "data_dir": Path("/data"), "alpha": float("nan")}
    written = results.write_table(_frame(), "02_dynamics", "table2", parameters=parameters,
                                  extraction=_extraction(), directory=tmp_path)
    meta = json.loads(written.sidecar.read_text(encoding="utf-8"))
    assert meta["parameters"] == {"scale": "mini", "models": ["lrm3", "bl"], "n_perm": 1000,
                                  "data_dir": "/data", "alpha": None}
    assert meta["weights"] == {"lrm3": {"kind": "trained", "sha256": "ab" * 32},
                               "bl": {"kind": "file", "sha256": "ef" * 32}}
    assert meta["probes"] == [{"name": "tiny", "content_hash": "cd" * 32, "n_images": 5000,
                               "n_categories": 100, "images_per_category": 50}]
    assert {"python", "torch", "numpy", "pandas", "analysis_utils"} <= set(meta["software"])
    assert meta["columns"] == list(_frame().columns) and meta["rows"] == 3
    import hashlib
    assert meta["csv_sha256"] == hashlib.sha256(written.csv.read_bytes()).hexdigest()
    assert "/some/user/folder" not in written.sidecar.read_text()


def test_records_json_holds_the_numbers_the_csv_shows(tmp_path):
    written = results.write_table(_frame(), "05_findings", "claims", directory=tmp_path,
                                  records=True)
    rows = json.loads(written.json.read_text(encoding="utf-8"))
    assert [list(r) for r in rows] == [list(_frame().columns)] * 3
    assert rows[0]["beta"] == -0.0310381 and rows[0]["n"] == 5000
    assert rows[2]["beta"] is None and rows[2]["note"] is None
    assert rows[1]["significant"] is False


def test_index_is_written_as_columns_when_asked(tmp_path):
    frame = pd.DataFrame([[1.0, 0.5], [0.5, 1.0]], index=pd.Index(["a", "b"], name="tag"),
                         columns=["a", "b"])
    written = results.write_table(frame, "04_cross_model_rsa", "rsa_penult",
                                  directory=tmp_path, index=True)
    assert written.csv.read_text() == "tag,a,b\na,1,0.5\nb,0.5,1\n"


def test_results_dir_from_argument_environment_or_book_root(tmp_path, monkeypatch):
    monkeypatch.delenv(results.RESULTS_ENV, raising=False)
    book = tmp_path / "repo"
    (book / "book" / "notebooks").mkdir(parents=True)
    (book / "_toc.yml").write_text("format: jb-book\n")
    monkeypatch.chdir(book / "book" / "notebooks")
    found = results.results_dir()
    assert found == (book / "book" / "_build" / "html" / "results").resolve() and found.is_dir()
    monkeypatch.setenv(results.RESULTS_ENV, str(tmp_path / "env"))
    assert results.results_dir() == tmp_path / "env"
    assert results.results_dir(tmp_path / "given") == tmp_path / "given"
    monkeypatch.delenv(results.RESULTS_ENV)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AnalysisUtilsError, match="Could not find the book"):
        results.results_dir()


def test_links_are_relative_to_the_chapter_pages(tmp_path):
    html = tmp_path / "html"
    written = results.write_table(_frame(), "02_dynamics", "table2",
                                  directory=html / "results", records=True)
    snippet = results.links_html([written])
    assert 'href="../../results/02_dynamics_table2.csv"' in snippet
    assert 'href="../../results/02_dynamics_table2.json"' in snippet
    assert 'href="../../results/02_dynamics_table2.meta.json"' in snippet


@pytest.mark.parametrize("call, message", [
    (lambda d: results.write_table([1, 2], "02_dynamics", "t", directory=d), "DataFrame"),
    (lambda d: results.write_table(_frame(), "02 dynamics", "t", directory=d), "chapter name"),
    (lambda d: results.write_table(_frame(), "02_dynamics", "../t", directory=d), "table name"),
    (lambda d: results.write_table(pd.DataFrame({"x": [[1, 2]]}), "c", "t", directory=d),
     "column 'x' holds a list"),
    (lambda d: results.write_table(_frame(), "c", "t", directory=d,
                                   parameters={"f": object()}), r"parameters\['f'\]"),
    (lambda d: results.write_table(_frame(), "c", "t", directory=d, significant=0),
     "significant"),
    (lambda d: results.write_table(_frame(), "c", "t", directory=d, extraction={"m": {}}),
     "metadata dict of extract.features"),
    (lambda d: results.write_table(pd.DataFrame([[1, 2]], columns=["a", "a"]), "c", "t",
                                   directory=d), "repeat: a"),
])
def test_bad_input_gets_one_sentence_and_writes_nothing(tmp_path, call, message):
    with pytest.raises(AnalysisUtilsError, match=message):
        call(tmp_path / "out")
    assert not any((tmp_path / "out").glob("*"))
