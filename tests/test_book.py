"""The book: what the chapters call (``book``: parameter checks, the rendered-with header), what
the build calls (``build``: preflight, prefill, the output and HTML checks), and every chapter
executed under papermill with tiny parameters (on the real tiny probe, when present)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from analysis_utils import book, build
from analysis_utils.errors import AnalysisUtilsError

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))


def check(**overrides):
    params = {"weights": "untrained", **overrides}
    return book.check_parameters(**params)


# ------------------------------------------------------------------ parameter validation


def test_defaults_give_every_model_and_both_stages():
    params = check()
    from analysis_utils import catalogue

    assert params.models == tuple(catalogue.names())
    assert params.readouts == ("penult", "logits")
    assert params.untrained and "UNTRAINED" in params.weights_label()


def test_comma_strings_as_papermill_passes_them():
    params = check(models="lrm3, bl", baseline="lrm3=2", after="bl=4", n_perm=7, seed=3)
    assert params.models == ("lrm3", "bl")
    assert params.state_step("lrm3", "baseline") == 2
    assert params.state_step("lrm3", "after") == 3  # the card's after step is kept
    assert params.state_step("bl", "after") == 4
    assert params.n_perm == 7 and params.seed == 3


@pytest.mark.parametrize("overrides, words", [
    ({"scale": "huge"}, "scale must be one of"),
    ({"weights": "pretrained"}, "weights must be one of"),
    ({"weights": "official"}, "only at full scale"),
    ({"probe": "cifar"}, "probe must be one of"),
    ({"probe": "imagenet"}, "needs full-scale models"),
    ({"models": "lrm3,resnet"}, "Unknown model 'resnet'"),
    ({"models": "bl,bl"}, "twice"),
    ({"models": ""}, "models is empty"),
    ({"readouts": "logits"}, "must include 'penult'"),
    ({"readouts": "penult,logits,V1", "models": "lrm3"}, "does not exist for 'lrm3'"),
    ({"after": "lrm3=4"}, "steps are 1..3"),
    ({"after": "lrm3=0"}, "steps are 1..3"),
    ({"baseline": "lrm3:2"}, "model=step"),
    ({"baseline": "cornet_rt=1", "models": "lrm3,bl,alexnet"}, "not among the chapter's models"),
    ({"n_perm": 0}, "n_perm must be an integer of at least 1"),
    ({"n_perm": "100"}, "n_perm must be an integer"),
    ({"seed": -1}, "seed must be an integer of at least 0"),
    ({"images_per_category": 51}, "at most 50"),
    ({"images_per_category": 1}, "at least 2"),
    ({"device": "gpu"}, "device must be"),
    ({"data_dir": "/nonexistent/probe/folder"}, "is not a folder"),
])
def test_each_mistake_gets_one_clear_sentence(overrides, words):
    with pytest.raises(AnalysisUtilsError, match=words.replace("(", r"\(").replace(")", r"\)")):
        check(**overrides)


def test_cuda_request_without_cuda_is_refused():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(AnalysisUtilsError, match="CUDA is not available"):
        check(device="cuda")


def test_trained_weights_absent_says_how_to_build_untrained(monkeypatch):
    monkeypatch.setattr(book, "missing_trained", lambda models, scale="mini": ["lrm3"])
    with pytest.raises(AnalysisUtilsError, match='PARAMS="-p weights untrained"'):
        book.check_parameters(weights="trained", models="lrm3,bl")
    assert build.preflight(["-p", "weights", "trained"]) == 2
    assert build.preflight(["-p", "weights", "untrained"]) == 0


def test_seed_and_count_parameters():
    assert book.check_seeds("0, 1,2", "untrained_seeds") == (0, 1, 2)
    assert book.check_seeds([3, 4], "untrained_seeds") == (3, 4)
    with pytest.raises(AnalysisUtilsError, match="at least 2 seeds"):
        book.check_seeds(1, "untrained_seeds")  # what papermill passes for -p untrained_seeds 1
    for bad in ("0", "0,0", "0,x", "-1,2", 1.5, None):
        with pytest.raises(AnalysisUtilsError, match="untrained_seeds"):
            book.check_seeds(bad, "untrained_seeds")
    assert book.check_count(5, "n_boot") == 5
    with pytest.raises(AnalysisUtilsError, match="n_boot"):
        book.check_count(0, "n_boot")


def test_papermill_params_are_parsed_in_pairs():
    argv = ["-p", "scale", "mini", "-p", "weights", "untrained", "--log-output"]
    assert build.parse_papermill_params(argv) == {"scale": "mini", "weights": "untrained"}
    with pytest.raises(AnalysisUtilsError, match="needs a name and a value"):
        build.parse_papermill_params(["-p", "weights"])


def test_header_names_scale_weights_probe_and_versions():
    trained = book.rendered_with(check(weights="untrained", seed=4, models="lrm3,bl"))
    assert "UNTRAINED" in trained and "seed 4" in trained
    assert "scale `mini`" in trained and "probe `tiny`" in trained
    assert "torch" in trained and "numpy" in trained and "lrm3, bl" in trained


# ------------------------------------------------------------------ output and HTML checks


def _notebook(path: Path, outputs: list, tags=("hide-input",), injected: bool = False) -> Path:
    cells = [
        {"cell_type": "code", "metadata": {"tags": ["parameters", "hide-input"]},
         "source": "x = 1", "outputs": [], "execution_count": 1},
        {"cell_type": "code", "metadata": {"tags": list(tags)}, "source": "print(x)",
         "outputs": outputs, "execution_count": 2},
    ]
    if injected:  # as papermill writes it: its own tag only
        cells.insert(1, {"cell_type": "code", "metadata": {"tags": ["injected-parameters"]},
                         "source": "x = 2", "outputs": [], "execution_count": 1})
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4,
                                "nbformat_minor": 5}))
    return path


STDOUT = [{"output_type": "stream", "name": "stdout", "text": "1\n"}]


def test_check_outputs_flags_cells_without_outputs_and_errors(tmp_path):
    good = _notebook(tmp_path / "good.ipynb", [{"output_type": "stream", "name": "stdout",
                                                 "text": "1\n"}])
    empty = _notebook(tmp_path / "empty.ipynb", [])
    failed = _notebook(tmp_path / "failed.ipynb", [{"output_type": "error", "ename": "E",
                                                     "evalue": "", "traceback": []}])
    assert build.check_outputs([good]) == []
    assert "has no outputs" in build.check_outputs([empty])[0]
    assert "raised an error" in build.check_outputs([failed])[0]


def test_check_outputs_flags_a_code_cell_that_would_not_be_folded(tmp_path):
    shown = _notebook(tmp_path / "shown.ipynb", STDOUT, tags=())
    (problem,) = build.check_outputs([shown])
    assert "code cell 2 is not tagged 'hide-input'" in problem and "print(x)" in problem
    bare = json.loads(shown.read_text())
    bare["cells"][0]["metadata"]["tags"] = ["parameters"]  # the parameters cell is folded too
    shown.write_text(json.dumps(bare))
    assert len(build.check_outputs([shown])) == 2


def test_papermills_injected_cell_is_folded_and_nothing_else_changes(tmp_path):
    executed = _notebook(tmp_path / "executed.ipynb", STDOUT, injected=True)
    before = json.loads(executed.read_text())
    assert build.check_outputs([executed]) == []  # the injected cell is folded afterwards
    assert build.fold_injected_parameters([executed]) == [str(executed)]
    after = json.loads(executed.read_text())
    assert after["cells"][1]["metadata"]["tags"] == ["injected-parameters", "hide-input"]
    after["cells"][1]["metadata"]["tags"] = ["injected-parameters"]
    assert after == before
    assert build.fold_injected_parameters([executed]) == []  # once folded, left alone
    plain = _notebook(tmp_path / "plain.ipynb", STDOUT)
    text = plain.read_text()
    assert build.fold_injected_parameters([plain]) == [] and plain.read_text() == text


# What Jupyter Book 1.x (myst-nb 1.4, sphinx-book-theme 1.3) writes for a code cell tagged
# hide-input, for one without the tag, and for the rerun section (a bash block, highlighted).
FOLDED_CELL = """<div class="cell tag_hide-input docutils container">
<details class="admonition hide above-input">
<summary aria-label="Toggle hidden content">
<p class="collapsed admonition-title">Show code cell source</p>
<p class="expanded admonition-title">Hide code cell source</p>
</summary>
<div class="cell_input docutils container">
<div class="highlight-ipython3 notranslate"><div class="highlight"><pre><span></span>x = 1</pre>
</div></div></div>
</details>
<div class="cell_output docutils container"><img alt="_images/a.png" src="a.png" /></div>
</div>"""
SHOWN_CELL = """<div class="cell tag_injected-parameters docutils container">
<div class="cell_input docutils container">
<div class="highlight-ipython3 notranslate"><div class="highlight"><pre>x = 2</pre></div></div>
</div>
</div>"""
RERUN = (
    '<section id="rerun-this-chapter">\n'
    '<h2>Rerun this chapter<a class="headerlink" href="#rerun-this-chapter">#</a></h2>\n'
    '<div class="highlight-bash notranslate"><div class="highlight"><pre><span></span>'
    'make<span class="w"> </span>book<span class="w"> </span><span class="nv">PARAMS</span>'
    '<span class="o">=</span><span class="s2">"-p models lrm3,bl -p n_perm 1000"</span>\n'
    '.venv/bin/jupytext<span class="w"> </span>--to<span class="w"> </span>ipynb'
    '<span class="w"> </span>notebooks/02_dynamics.py<span class="w"> </span>-o'
    '<span class="w"> </span>/tmp/02.ipynb\n'
    '.venv/bin/papermill<span class="w"> </span>/tmp/02.ipynb<span class="w"> </span>'
    "/tmp/out.ipynb\n"
    "</pre></div></div>\n"
    "</section>"
)


def _page(*parts: str) -> str:
    return ('<html><head><title>Dynamics</title></head><body><main><section id="dynamics">'
            "<h1>Dynamics</h1>" + "\n".join(parts) + "</section></main></body></html>")


def test_folded_inputs_are_told_from_shown_ones_on_built_html():
    assert build.unfolded_inputs(_page(FOLDED_CELL, FOLDED_CELL)) == (2, 0)
    assert build.unfolded_inputs(_page(FOLDED_CELL, SHOWN_CELL)) == (2, 1)
    opened = FOLDED_CELL.replace('<details class="admonition hide above-input">',
                                 '<details class="admonition hide above-input" open>')
    assert build.unfolded_inputs(_page(opened)) == (1, 1)  # a toggle that starts open
    other = FOLDED_CELL.replace("admonition hide above-input", "admonition note")
    assert build.unfolded_inputs(_page(other)) == (1, 1)  # a <details> that is no toggle
    after = FOLDED_CELL.replace("</details>\n<div class=\"cell_output", "</details>\n"
                                '<div class="cell_input docutils container"></div>'
                                '<div class="cell_output')
    assert build.unfolded_inputs(_page(after)) == (2, 1)  # closed before the second input


def test_the_rerun_section_needs_make_book_and_the_chapters_papermill_line():
    assert build.rerun_problems(_page(FOLDED_CELL, RERUN), "02_dynamics") == []
    (missing,) = build.rerun_problems(_page(FOLDED_CELL), "02_dynamics")
    assert "no 'Rerun this chapter' section" in missing
    (other,) = build.rerun_problems(_page(RERUN), "03_orthogonality")
    assert "no papermill command for notebooks/03_orthogonality.py" in other
    no_make = RERUN.replace('<span class="nv">PARAMS</span>', "")
    assert "no make book PARAMS=" in build.rerun_problems(_page(no_make), "02_dynamics")[0]
    outside = _page(RERUN.replace("</pre></div></div>\n</section>", "</pre></div></div>") +
                    "</section>")
    assert build.rerun_problems(outside, "02_dynamics") == []
    elsewhere = _page('<section id="rerun-this-chapter"><h2>Rerun</h2></section>',
                      "<p>make book PARAMS=\"-p n_perm 1\" papermill notebooks/02_dynamics.py</p>")
    assert len(build.rerun_problems(elsewhere, "02_dynamics")) == 2  # text after the section


def test_every_chapter_page_of_a_build_is_checked(tmp_path):
    chapters = tmp_path / "book" / "notebooks"
    chapters.mkdir(parents=True)
    assert "no chapter pages" in build.chapter_page_problems(tmp_path)[0]
    (chapters / "02_dynamics.html").write_text(_page(FOLDED_CELL, RERUN))
    assert build.chapter_page_problems(tmp_path) == []
    (chapters / "04_cross_model_rsa.html").write_text(_page(SHOWN_CELL))
    problems = build.chapter_page_problems(tmp_path)
    assert problems == ["04_cross_model_rsa: 1 of 1 code inputs are not folded (tag every code "
                        "cell 'hide-input')",
                        "04_cross_model_rsa: no 'Rerun this chapter' section (id "
                        "'rerun-this-chapter') at its end"]


def _site(root: Path, broken: bool) -> Path:
    (root / "book" / "notebooks").mkdir(parents=True)
    (root / "_static").mkdir()
    (root / "_static" / "fig.png").write_bytes(_png())
    (root / "index.html").write_text(
        '<html><head><title>Book</title></head><body><a href="book/notebooks/02_dynamics.html">'
        "chapter</a></body></html>")
    target = "missing.html" if broken else "#results"
    (root / "book" / "notebooks" / "02_dynamics.html").write_text(
        '<html><head><title>Dynamics</title></head><body><h1 id="results">Results</h1>'
        f'<img src="../../_static/fig.png"><a href="{target}">link</a>'
        f"{FOLDED_CELL.replace('a.png', '../../_static/fig.png')}{RERUN}</body></html>")
    return root


def _png() -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [0, 1])
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def test_broken_links_are_found(tmp_path):
    assert build.broken_links(_site(tmp_path / "good", broken=False)) == []
    problems = build.broken_links(_site(tmp_path / "bad", broken=True))
    assert problems == ["book/notebooks/02_dynamics.html: broken link missing.html"]


@pytest.mark.slow
def test_check_html_in_headless_chromium(tmp_path):
    if shutil.which("chromium") is None and shutil.which("chromium-browser") is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    site = _site(tmp_path / "site", broken=False)
    shots = tmp_path / "shots"
    assert build.check_html(site, shots) == []
    assert (shots / "index.png").stat().st_size > 1000
    assert (shots / "02_dynamics.png").stat().st_size > 1000
    # a chapter whose figure file is gone fails the check
    (site / "_static" / "fig.png").unlink()
    problems = build.check_html(site, shots)
    assert any("figure" in p and "missing" in p for p in problems)
    # so does a chapter whose code shows unfolded
    page = site / "book" / "notebooks" / "02_dynamics.html"
    (site / "_static" / "fig.png").write_bytes(_png())
    page.write_text(page.read_text().replace("admonition hide above-input", "admonition"))
    assert build.check_html(site, shots) == [
        "02_dynamics: 1 of 1 code inputs are not folded (tag every code cell 'hide-input')"]


# ------------------------------------------------------------------ chapters under papermill


def test_every_chapter_has_one_parameters_cell_with_the_shared_parameters():
    import jupytext

    shared = {"scale", "weights", "probe", "data_dir", "models", "readouts", "baseline",
              "after", "n_perm", "seed", "device", "cache_dir", "images_per_category",
              "plugins"}
    assert [c.stem for c in CHAPTERS] == list(book.CHAPTERS)
    for chapter in CHAPTERS:
        notebook = jupytext.read(chapter)
        tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, chapter.name
        first_code = next(c for c in notebook.cells if c.cell_type == "code")
        assert first_code is tagged[0], f"{chapter.name}: the parameters cell must come first"
        names = {line.split("=")[0].strip() for line in tagged[0].source.splitlines()
                 if "=" in line and not line.startswith("#")}
        assert shared <= names, f"{chapter.name} lacks {sorted(shared - names)}"


def test_every_chapter_folds_its_code_opens_with_a_summary_and_ends_with_its_rerun_command():
    """The reader's view: every code cell (the parameters cell too) is tagged hide-input, the
    title is followed by a two-line summary, the last cell gives the make book line and the
    chapter's own papermill line, and the result tables are named after the chapter."""
    import jupytext

    for chapter in CHAPTERS:
        notebook = jupytext.read(chapter)
        code = [c for c in notebook.cells if c.cell_type == "code"]
        unfolded = [c.source.splitlines()[0] for c in code
                    if "hide-input" not in c.metadata.get("tags", [])]
        assert not unfolded, f"{chapter.name}: code cells without hide-input: {unfolded}"
        title = notebook.cells[0].source.splitlines()
        assert title[0].startswith("# ") and title[1] == "", chapter.name
        summary = title[2:title.index("", 2)]
        assert summary[0].startswith("**In short:**") and len(summary) == 2, chapter.name
        last = notebook.cells[-1]
        assert last.cell_type == "markdown", chapter.name
        assert last.source.startswith("## Rerun this chapter"), chapter.name
        assert 'make book PARAMS="' in last.source, chapter.name
        assert f"jupytext --to ipynb notebooks/{chapter.name}" in last.source, chapter.name
        assert f".venv/bin/papermill /tmp/{chapter.stem}.ipynb" in last.source, chapter.name
        text = chapter.read_text()
        assert f'CHAPTER = "{chapter.stem}"' in text and "results.write_table(" in text
        assert "results.links_html(" in text, chapter.name


def _probe_dir() -> str | None:
    data = os.environ.get("ANALYSIS_UTILS_DATA")
    if data and (Path(data) / "tiny-imagenet-200").is_dir():
        return data
    return None


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("feature-cache")


@pytest.mark.slow
@pytest.mark.parametrize("chapter", [c.stem for c in CHAPTERS])
def test_chapter_runs_under_papermill(chapter, tmp_path, tiny_cache, monkeypatch):
    """Each chapter executes with tiny parameters, shows outputs in every code cell, says that
    the models are untrained, and fails loudly on a bad parameter."""
    if _probe_dir() is None:
        pytest.skip("ANALYSIS_UTILS_DATA does not hold tiny-imagenet-200/ (CI unpacks it)")
    import jupytext
    import papermill

    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # as make book: chapter 7's plug-in, examples/
    tables = tmp_path / "results"
    monkeypatch.setenv("ANALYSIS_UTILS_RESULTS", str(tables))  # not the repository's book

    source = tmp_path / f"{chapter}.src.ipynb"
    jupytext.write(jupytext.read(ROOT / "notebooks" / f"{chapter}.py"), source)
    output = tmp_path / f"{chapter}.ipynb"
    parameters = {"weights": "untrained", "images_per_category": 3, "n_perm": 20,
                  "models": "lrm3,bl,cornet_rt", "cache_dir": str(tiny_cache),
                  "data_dir": _probe_dir(), "device": "cpu"}
    if chapter == "03_orthogonality":
        parameters["untrained_seeds"] = "0,1"
    if chapter in ("04_cross_model_rsa", "06_perturbations"):
        parameters["n_boot"] = 20
    papermill.execute_notebook(str(source), str(output), parameters=parameters,
                               kernel_name="python3", progress_bar=False, cwd=str(tmp_path))
    assert build.check_outputs([output]) == []
    text = output.read_text()
    assert "UNTRAINED" in text
    assert "image/png" in text  # at least one figure
    written = sorted(tables.glob(f"{chapter}_*.csv"))
    assert written, f"{chapter} wrote no result table"
    for csv in written:  # each with its sidecar, and linked from the chapter
        assert csv.with_suffix(".meta.json").is_file()
        assert f"results/{csv.name}" in text

    bad = tmp_path / f"{chapter}.bad.ipynb"
    with pytest.raises(papermill.PapermillExecutionError, match="Unknown model 'resnet'"):
        papermill.execute_notebook(str(source), str(bad),
                                   parameters={**parameters, "models": "lrm3,resnet"},
                                   kernel_name="python3", progress_bar=False, cwd=str(tmp_path))


def test_each_module_says_its_side_and_the_chapters_call_only_the_chapters_side():
    """book is what the chapters call, build what make book calls: every ``book.<name>`` a
    chapter uses exists in book, and none of the build's steps is left in book."""
    import re

    assert book.__doc__.startswith("What the chapters call")
    assert build.__doc__.startswith("What the build calls")
    for chapter in CHAPTERS:
        used = set(re.findall(r"(?<![/\w])book\.([A-Za-z_]\w*)", chapter.read_text()))
        assert used and all(hasattr(book, name) for name in used), (chapter.name, used)
        assert not re.search(r"(?<![/\w])build\.", chapter.read_text()), chapter.name
    for name in ("preflight", "prefill", "prefill_jobs", "check_outputs", "check_html", "main"):
        assert hasattr(build, name) and not hasattr(book, name), name


def test_build_command_line_reports_unknown_commands():
    result = subprocess.run([sys.executable, "-m", "analysis_utils.build", "frobnicate"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2 and "Unknown command" in result.stderr


def test_prefill_extracts_what_the_chapters_read_with_their_own_defaults(tmp_path, capsys):
    """prefill reads each chapter's defaults (here chapter 3's untrained_seeds and reference
    size), overrides them with the -p pairs, and leaves every feature the chapter reads in the
    cache; a second run finds them all there."""
    import jupytext
    from conftest import write_tiny_layout

    from analysis_utils import extract, probes

    data = write_tiny_layout(tmp_path / "data", n_wnids=8, images_per_wnid=3)
    source = tmp_path / "03_orthogonality.ipynb"
    jupytext.write(jupytext.read(ROOT / "notebooks" / "03_orthogonality.py"), source)
    defaults = build.chapter_parameters(source, [])
    assert defaults["untrained_seeds"] == "0,1,2" and defaults["weights"] == "trained"
    cache = tmp_path / "cache"
    pairs = ["-p", "weights", "untrained", "-p", "models", "alexnet,b", "-p", "seed", "1",
             "-p", "data_dir", str(data), "-p", "cache_dir", str(cache),
             "-p", "images_per_category", "3", "-p", "reference_images_per_category", "2"]
    values = build.chapter_parameters(source, pairs)
    assert values["seed"] == 1 and values["reference_images_per_category"] == 2
    assert values["untrained_seeds"] == "0,1,2"  # the chapter's default, not overridden

    jobs = build.prefill_jobs([source], pairs)
    assert [job.label for job in jobs] == ["alexnet", "b", "alexnet seed 0", "b seed 0",
                                           "alexnet seed 2", "b seed 2"]
    assert build.main(["prefill", "--workers", "2", str(source), *pairs]) == 0
    first = capsys.readouterr().out
    assert "6 of 6 extractions to run on 2 worker(s)" in first
    assert "extracted alexnet" in first and "untrained reference (seeds 0, 2" in first
    probe = probes.load("tiny", data_dir=data, images_per_category=3)
    cut, keep = book.reference_probe(probe, 2)
    assert len(cut) == len(keep) == 2 * probe.n_categories
    for name in ("alexnet", "b"):
        _, meta = extract.features(name, probe, weights="untrained", seed=1, cache_dir=cache,
                                   progress=False)
        assert all(meta["cache"]["from_cache"].values())
        for seed in (0, 2):  # seed 1 is the chapter's own models, cut from their features
            _, meta = extract.features(name, cut, weights="untrained", seed=seed,
                                       cache_dir=cache, progress=False)
            assert all(meta["cache"]["from_cache"].values()), (name, seed)
    # 2 readouts x (the chapter's seed 1 + reference seeds 0 and 2): seed 1 was not re-extracted
    assert len(list((cache / "alexnet").glob("*.json"))) == 6

    assert build.main(["prefill", str(source), *pairs]) == 0  # default workers
    assert "0 of 6 extractions to run: all were in the cache" in capsys.readouterr().out
    assert all(build.job_is_cached(job) for job in jobs)
    assert build.main(["prefill", "--workers", "0", str(source), *pairs]) == 2
    assert "--workers needs a positive integer" in capsys.readouterr().err
    assert build.main(["prefill", *pairs]) == 2
    assert "needs the chapters' notebooks" in capsys.readouterr().err
