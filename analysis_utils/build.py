"""What the build calls: ``make book``'s steps around the chapters, and its checks.

The build's side of the book (the Makefile runs ``python -m analysis_utils.build ...``); what
the chapters themselves call (parameters, the header, opening a chapter) is
:mod:`analysis_utils.book`.

- :func:`preflight` runs before any chapter: it reads the papermill ``-p`` pairs and stops with
  one sentence when trained weights are absent or a plug-in module does not load.
- :func:`prefill` extracts every feature the chapters will read (each chapter's defaults
  overridden by the ``-p`` pairs) into the feature cache, once, so the chapters can then run
  side by side and all read the cache (:func:`prefill_jobs` lists those extractions, chapter
  3's untrained reference of :func:`analysis_utils.book.untrained_reference` included).
- :func:`fold_injected_parameters` folds papermill's injected parameters cell like every
  other code cell (it adds the ``hide-input`` tag that papermill does not copy).
- :func:`check_outputs` fails when an executed notebook lacks outputs or has a code cell that
  is not folded; :func:`check_html` opens the built pages in headless Chromium, saves
  screenshots, and fails on missing figures, broken links, a chapter whose code inputs are
  not folded (:func:`unfolded_inputs`) or that lacks its rerun command
  (:func:`rerun_problems`).

Command line (used by the Makefile)::

    python -m analysis_utils.build preflight -p weights untrained ...
    python -m analysis_utils.build prefill book/notebooks/_sources/*.ipynb -p weights untrained
    python -m analysis_utils.build fold-injected book/notebooks/*.ipynb
    python -m analysis_utils.build check-outputs book/notebooks/*.ipynb
    python -m analysis_utils.build check-html book/_build/html screenshots
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

from . import book
from .errors import AnalysisUtilsError

# --------------------------------------------------------------------------- make book


def parse_papermill_params(argv: list[str]) -> dict[str, str]:
    """``['-p', 'weights', 'untrained', ...]`` -> ``{'weights': 'untrained'}``."""
    params: dict[str, str] = {}
    index = 0
    while index < len(argv):
        flag = argv[index]
        if flag in ("-p", "--parameters"):
            if index + 2 >= len(argv):
                raise AnalysisUtilsError(f"'-p' needs a name and a value, got {argv[index:]!r}.")
            params[argv[index + 1]] = argv[index + 2]
            index += 3
        else:
            index += 1
    return params


def preflight(argv: list[str]) -> int:
    """Stop ``make book`` early, in one sentence, when trained weights are asked for but absent
    (or a plug-in module named by ``-p plugins`` does not load)."""
    from .plugins import load_plugins

    params = parse_papermill_params(argv)
    try:
        load_plugins(params.get("plugins"))
    except AnalysisUtilsError as error:
        print(error, file=sys.stderr)
        return 2
    scale = params.get("scale", "mini")
    weights = params.get("weights", "trained")
    if weights != "trained" or scale != "mini":
        return 0
    from . import catalogue

    models = params.get("models")
    names = book.as_list(models, "models") if models and models != "all" else catalogue.names()
    missing = book.missing_trained(names, scale)
    if missing:
        print(book.trained_missing_sentence(missing), file=sys.stderr)
        return 2
    return 0


def _papermill_value(text: str):
    """A ``-p`` value typed as papermill types it: bool, None, int, float, else the string."""
    if text in ("True", "False"):
        return text == "True"
    if text == "None":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


#: the parameters every chapter shares (and :func:`analysis_utils.book.check_parameters` takes)
SHARED_PARAMETERS = ("scale", "weights", "probe", "data_dir", "models", "readouts", "baseline",
                     "after", "n_perm", "seed", "device", "cache_dir", "images_per_category",
                     "plugins")


def chapter_parameters(notebook: str | os.PathLike, argv: list[str]) -> dict:
    """A chapter's parameters as papermill will set them: the defaults of the notebook's
    ``parameters`` cell, overridden by the ``-p`` pairs in ``argv``."""
    import ast

    import papermill

    values = {name: ast.literal_eval(info["default"])
              for name, info in papermill.inspect_notebook(str(notebook)).items()}
    values.update({name: _papermill_value(text)
                   for name, text in parse_papermill_params(argv).items()})
    return values


@dataclass(frozen=True)
class ExtractionJob:
    """One model's features for :func:`prefill`: which probe, which images, which weights."""

    model: str
    probe: str
    data_dir: str | None
    images_per_category: int
    reference_images: int | None  # cut to the first images of each category (the reference)
    readouts: tuple[str, ...]
    options: tuple[tuple[str, object], ...]  # extract.features keywords (scale, weights, ...)
    plugins: tuple[str, ...] = ()  # the plug-in module that registers the model, if any
    perturbation: tuple = ()  # (name, level, seed) of a perturbed probe (chapter 6), if any

    @property
    def kind(self) -> str:
        """"main" (a chapter's features), "reference" (untrained seeds) or "perturbed"."""
        if self.perturbation:
            return "perturbed"
        return "main" if self.reference_images is None else "reference"

    @property
    def label(self) -> str:
        if self.kind == "main":
            return self.model
        if self.kind == "perturbed":
            return f"{self.model} {self.perturbation[0]} {self.perturbation[1]:g}"
        return f"{self.model} seed {dict(self.options)['seed']}"

    def perturbation_spec(self):
        """The job's :class:`analysis_utils.perturb.PerturbationSpec`, or None."""
        from .perturb import PerturbationSpec

        return PerturbationSpec(*self.perturbation) if self.perturbation else None


def prefill_jobs(notebooks, pairs: list[str]) -> list[ExtractionJob]:
    """Every extraction the chapters will read, once each: for each chapter (its defaults
    overridden by the ``-p`` pairs) its models' features, the untrained reference of a
    chapter that has ``untrained_seeds`` (chapter 3; its own seed is cut from its features),
    and the perturbed probes of a chapter that has ``perturbation_levels`` (chapter 6; level 0
    is the clean features)."""
    from . import robustness

    jobs: list[ExtractionJob] = []
    for notebook in notebooks:
        values = chapter_parameters(notebook, pairs)
        shared = {k: v for k, v in values.items() if k in SHARED_PARAMETERS}
        params = book.check_parameters(**shared)
        where = dict(probe=params.probe, data_dir=params.data_dir,
                     images_per_category=params.images_per_category or 50)
        options = tuple(sorted(params.extract_kwargs().items()))
        jobs += [ExtractionJob(name, **where, reference_images=None, readouts=params.readouts,
                               options=options, plugins=params.plugins_of(name))
                 for name in params.models]
        if "untrained_seeds" in values:
            seeds = book.check_seeds(values["untrained_seeds"], "untrained_seeds")
            count = min(book.check_count(values["reference_images_per_category"],
                                    "reference_images_per_category", minimum=2),
                        where["images_per_category"])
            for seed in seeds:
                if params.untrained and seed == params.seed:
                    continue  # the chapter cuts these from its own features
                untrained = tuple(sorted({**dict(options), "weights": "untrained",
                                          "seed": seed}.items()))
                jobs += [ExtractionJob(name, **where, reference_images=count,
                                       readouts=book.STAGE_READOUTS, options=untrained,
                                       plugins=params.plugins_of(name))
                         for name in params.models]
        if "perturbation_levels" in values:
            grid = robustness.check_levels(values["perturbation_levels"])
            count = min(book.check_count(values["perturbation_images_per_category"],
                                         "perturbation_images_per_category", minimum=2),
                        where["images_per_category"])
            seed = book.check_count(values["perturbation_seed"], "perturbation_seed",
                                    minimum=0)
            for spec in robustness.level_specs(grid, seed):
                jobs += [ExtractionJob(name, **where, reference_images=count,
                                       readouts=book.STAGE_READOUTS, options=options,
                                       plugins=params.plugins_of(name),
                                       perturbation=(spec.name, spec.level, spec.seed))
                         for name in params.models]
    return list(dict.fromkeys(jobs))  # in order, each once


_WORKER_PROBES: dict = {}


def _job_probe(job: ExtractionJob):
    """The probe of ``job`` (loaded once per process)."""
    from . import probes

    where = (job.probe, job.data_dir, job.images_per_category)
    if where not in _WORKER_PROBES:
        _WORKER_PROBES[where] = probes.load(job.probe, data_dir=job.data_dir,
                                            images_per_category=job.images_per_category)
    probe = _WORKER_PROBES[where]
    if job.reference_images is not None:
        probe = book.reference_probe(probe, job.reference_images)[0]
    return probe


def job_is_cached(job: ExtractionJob) -> bool:
    """Whether every readout of ``job`` is already in the feature cache."""
    from . import extract

    return extract.is_cached(job.model, _job_probe(job), readouts=job.readouts,
                             perturbation=job.perturbation_spec(), **dict(job.options))


def run_extraction_job(job: ExtractionJob, threads: int) -> tuple[ExtractionJob, float, bool]:
    """Run one job with ``threads`` torch threads: ``(job, seconds, whether it was cached)``."""
    import torch

    from . import extract
    from .plugins import load_plugins

    torch.set_num_threads(threads)
    load_plugins(job.plugins)  # a spawned worker starts with the catalogue's own models only
    _, metadata = extract.features(job.model, _job_probe(job), readouts=job.readouts,
                                   progress=False, perturbation=job.perturbation_spec(),
                                   **dict(job.options))
    return job, metadata["seconds"], all(metadata["cache"]["from_cache"].values())


#: at most this many prefill workers by default (each holds a model and the images it decodes)
MAX_PREFILL_WORKERS = 4


def prefill(argv: list[str]) -> int:
    """Extract into the feature cache every feature the chapters will read.

    ``argv``: optionally ``--workers N``, then the chapters' source notebooks, then the ``-p``
    pairs of ``make book`` (see :func:`prefill_jobs`). ``make book`` runs this once before the
    chapters run side by side, so no two chapters compute the same features. The jobs are
    shared among worker processes with one torch thread each (one per core, at most
    :data:`MAX_PREFILL_WORKERS`; measured ~15 % faster on 2 cores than one process with 2
    threads), or run in this process with every core when there is one worker, on a GPU and at
    full scale (where each worker would hold thousands of decoded ImageNet images). With a
    warm cache it only checks the entries.
    """
    import time

    workers = None
    if argv[:1] == ["--workers"]:
        if len(argv) < 2 or not argv[1].isdigit() or int(argv[1]) < 1:
            raise AnalysisUtilsError(
                f"--workers needs a positive integer, got {argv[1:2]}; for example --workers 2."
            )
        workers, argv = int(argv[1]), argv[2:]
    notebooks = argv[:_first_flag(argv)]
    pairs = argv[_first_flag(argv):]
    if not notebooks:
        raise AnalysisUtilsError(
            "prefill needs the chapters' notebooks before the -p pairs, for example: python -m "
            "analysis_utils.build prefill book/notebooks/_sources/*.ipynb -p weights untrained."
        )
    started = time.perf_counter()
    all_jobs = prefill_jobs(notebooks, pairs)
    jobs = [job for job in all_jobs if not job_is_cached(job)]  # no workers for a warm cache
    cores = os.cpu_count() or 1
    if workers is None:
        options = [dict(job.options) for job in jobs]
        single = (any(o["scale"] == "full" for o in options)
                  or any(o["device"] != "cpu" for o in options) and _gpu_available())
        workers = 1 if single else min(cores, MAX_PREFILL_WORKERS)
    workers = max(1, min(workers, len(jobs)))
    threads = max(1, cores // workers)
    if not jobs:
        results = []
    elif workers == 1:
        results = [run_extraction_job(job, threads) for job in jobs]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("spawn")  # no fork after torch started threads
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            results = list(pool.map(run_extraction_job, jobs, [threads] * len(jobs)))
    main = [f"{job.label} {seconds:.1f} s" for job, seconds, cached in results
            if not cached and job.kind == "main"]
    reference = [(job, seconds) for job, seconds, cached in results
                 if not cached and job.kind == "reference"]
    perturbed = [(job, seconds) for job, seconds, cached in results
                 if not cached and job.kind == "perturbed"]
    if reference:
        seeds = sorted({dict(job.options)["seed"] for job, _ in reference})
        main.append(f"the untrained reference (seeds {', '.join(map(str, seeds))}, "
                    f"{len(reference)} model-seeds) {sum(s for _, s in reference):.1f} s")
    if perturbed:
        main.append(f"the perturbed probes ({len(perturbed)} model-levels) "
                    f"{sum(s for _, s in perturbed):.1f} s")
    summary = f"extracted {', '.join(main)}" if main else "all were in the cache"
    how = f" on {workers} worker(s) x {threads} thread(s)" if jobs else ""
    print(f"Features for {len(notebooks)} chapters, {len(jobs)} of {len(all_jobs)} extractions "
          f"to run{how}: {summary} ({time.perf_counter() - started:.1f} s).")
    return 0


def _gpu_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _first_flag(argv: list[str]) -> int:
    """Index of the first ``-p``/``--parameters`` in ``argv`` (its length when there is none)."""
    for index, arg in enumerate(argv):
        if arg in ("-p", "--parameters"):
            return index
    return len(argv)


#: the cell tag that folds a code cell's input in the book (Jupyter Book 1.x, myst-nb)
FOLD_TAG = "hide-input"


def fold_injected_parameters(paths) -> list[str]:
    """Add :data:`FOLD_TAG` to papermill's injected parameters cell of each executed notebook
    (papermill writes that cell with its own tag only), so the book folds it like every other
    code cell; returns the notebooks that changed. Nothing else in a notebook is touched."""
    changed = []
    for path in paths:
        text = Path(path).read_text(encoding="utf-8")
        notebook = json.loads(text)
        folded = False
        for cell in notebook["cells"]:
            tags = cell.setdefault("metadata", {}).setdefault("tags", [])
            if "injected-parameters" in tags and FOLD_TAG not in tags:
                tags.append(FOLD_TAG)
                folded = True
        if folded:
            Path(path).write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n",
                                  encoding="utf-8")
            changed.append(str(path))
    return changed


def check_outputs(paths) -> list[str]:
    """Problems with executed notebooks: a code cell without outputs, an error output, or a
    code cell of the chapter not tagged :data:`FOLD_TAG` (papermill's injected parameters cell
    is folded by :func:`fold_injected_parameters` and checked in the HTML)."""
    problems = []
    for path in paths:
        with open(path) as handle:
            notebook = json.load(handle)
        code_cells = [c for c in notebook["cells"] if c["cell_type"] == "code"]
        if not code_cells:
            problems.append(f"{path}: no code cells")
        for number, cell in enumerate(code_cells, start=1):
            source = "".join(cell.get("source", ""))
            tags = cell.get("metadata", {}).get("tags", [])
            if "injected-parameters" in tags:
                continue
            if FOLD_TAG not in tags:
                first = source.strip().splitlines()[0][:60] if source.strip() else ""
                problems.append(f"{path}: code cell {number} is not tagged {FOLD_TAG!r}, so its "
                                f"code would show unfolded in the book ({first!r})")
            if "parameters" in tags:
                continue
            outputs = cell.get("outputs", [])
            if any(o.get("output_type") == "error" for o in outputs):
                problems.append(f"{path}: code cell {number} raised an error")
            if source.strip() and not outputs and "no-output" not in tags:
                first = source.strip().splitlines()[0][:60]
                problems.append(f"{path}: code cell {number} has no outputs ({first!r})")
    return problems


# --------------------------------------------------------------------------- HTML check


class _PageParser(HTMLParser):
    """Collects links and images of one HTML page."""

    def __init__(self):
        super().__init__()
        self.links: list[str] = []
        self.images: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        elif tag == "img" and attrs.get("src") is not None:
            self.images.append(attrs["src"])
        elif tag == "link" and attrs.get("href") and attrs.get("rel") in ("stylesheet",):
            self.links.append(attrs["href"])
        elif tag == "script" and attrs.get("src"):
            self.links.append(attrs["src"])


def _parse(path: Path) -> _PageParser:
    parser = _PageParser()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return parser


def broken_links(html_dir: str | os.PathLike) -> list[str]:
    """Local links, scripts, stylesheets and images in the built HTML that point nowhere."""
    html_dir = Path(html_dir)
    problems = []
    for page in sorted(html_dir.rglob("*.html")):
        if "_static" in page.parts or "_sources" in page.parts:
            continue
        parsed = _parse(page)
        for target in parsed.links + parsed.images:
            url = urlparse(target)
            if url.scheme in ("http", "https", "mailto", "data", "javascript") or url.netloc:
                continue
            if not url.path:
                if url.fragment and url.fragment not in parsed.ids:
                    problems.append(f"{page.relative_to(html_dir)}: anchor #{url.fragment} missing")
                continue
            resolved = (page.parent / unquote(url.path)).resolve()
            if not resolved.exists():
                problems.append(f"{page.relative_to(html_dir)}: broken link {target}")
    return problems


#: elements without an end tag (the page parsers keep no stack entry for them)
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
         "track", "wbr"}

#: the id of the section that ends every chapter with the commands that rerun it
RERUN_SECTION = "rerun-this-chapter"


class _ChapterParser(HTMLParser):
    """Code inputs of a chapter page, whether each is folded, and the rerun section's text.

    Jupyter Book 1.x (myst-nb) renders a code cell tagged ``hide-input`` as
    ``<div class="cell tag_hide-input">``, its input inside ``<details class="admonition hide
    above-input">`` (closed until the reader opens it) around ``<div class="cell_input">``."""

    def __init__(self):
        super().__init__()
        self.stack: list[tuple[str, set[str], bool]] = []  # tag, classes, folds its content
        self.inputs = 0
        self.unfolded = 0
        self.rerun_depth: int | None = None
        self.rerun_text: list[str] = []
        self.has_rerun = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = set((attrs.get("class") or "").split())
        if tag == "div" and "cell_input" in classes:
            self.inputs += 1
            if not any(folds for _, _, folds in self.stack):
                self.unfolded += 1
        if attrs.get("id") == RERUN_SECTION and self.rerun_depth is None:
            self.has_rerun = True
            self.rerun_depth = len(self.stack)
        if tag not in _VOID:
            folds = tag == "details" and "hide" in classes and "open" not in attrs
            self.stack.append((tag, classes, folds))

    def handle_endtag(self, tag):
        for index in range(len(self.stack) - 1, -1, -1):
            if self.stack[index][0] == tag:
                del self.stack[index:]
                break
        if self.rerun_depth is not None and len(self.stack) <= self.rerun_depth:
            self.rerun_depth = None

    def handle_data(self, data):
        if self.rerun_depth is not None:
            self.rerun_text.append(data)


def _chapter_parse(html: str) -> _ChapterParser:
    parser = _ChapterParser()
    parser.feed(html)
    parser.close()
    return parser


def unfolded_inputs(html: str) -> tuple[int, int]:
    """``(code inputs, of which not folded)`` on one built page: an input is folded when it lies
    inside a closed ``<details class="hide ...">``, the toggle that a ``hide-input`` cell gets."""
    parser = _chapter_parse(html)
    return parser.inputs, parser.unfolded


def rerun_problems(html: str, chapter: str) -> list[str]:
    """What the rerun section of the page of ``chapter`` (e.g. "02_dynamics") lacks: the
    section itself (id :data:`RERUN_SECTION`), a ``make book PARAMS=`` line, and the
    single-chapter papermill line that names ``notebooks/<chapter>.py``."""
    parser = _chapter_parse(html)
    if not parser.has_rerun:
        return [f"{chapter}: no 'Rerun this chapter' section (id {RERUN_SECTION!r}) at its end"]
    text = " ".join("".join(parser.rerun_text).split())
    problems = []
    if 'make book PARAMS="' not in text:
        problems.append(f"{chapter}: its rerun section gives no make book PARAMS=\"...\" command")
    if "papermill" not in text or f"notebooks/{chapter}.py" not in text:
        problems.append(f"{chapter}: its rerun section gives no papermill command for "
                        f"notebooks/{chapter}.py")
    return problems


def chapter_page_problems(html_dir: str | os.PathLike) -> list[str]:
    """Every chapter page of the build (``book/notebooks/*.html``): its code inputs folded, its
    rerun command present; a build without chapter pages is a problem too."""
    pages = sorted((Path(html_dir) / "book" / "notebooks").glob("[0-9][0-9]_*.html"))
    if not pages:
        return [f"{html_dir}: no chapter pages under book/notebooks/; run make book first"]
    problems = []
    for page in pages:
        html = page.read_text(encoding="utf-8", errors="replace")
        inputs, unfolded = unfolded_inputs(html)
        if inputs == 0:
            problems.append(f"{page.stem}: no code inputs found on the page")
        elif unfolded:
            problems.append(f"{page.stem}: {unfolded} of {inputs} code inputs are not folded "
                            f"(tag every code cell {FOLD_TAG!r})")
        problems += rerun_problems(html, page.stem)
    return problems


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise AnalysisUtilsError(
        "Chromium is not installed; install it with 'apt-get install -y chromium' "
        "(Debian) to run the HTML check."
    )


def _chromium(args: list[str], timeout: int = 90) -> subprocess.CompletedProcess:
    chromium = find_chromium()
    with tempfile.TemporaryDirectory() as profile:
        command = [chromium, "--headless", "--no-sandbox", "--disable-gpu",
                   "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}",
                   "--virtual-time-budget=5000", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def render_page(page: Path, screenshot: Path, width: int = 1280, height: int = 2400) -> str:
    """Open ``page`` in headless Chromium, save a screenshot, return the rendered DOM."""
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    url = page.resolve().as_uri()
    shot = _chromium([f"--screenshot={screenshot}", f"--window-size={width},{height}", url])
    if not screenshot.exists():
        raise AnalysisUtilsError(
            f"Chromium did not save a screenshot of {page} ({shot.stderr.strip()[-300:]})."
        )
    dom = _chromium(["--dump-dom", url])
    if dom.returncode != 0 or "<html" not in dom.stdout.lower():
        raise AnalysisUtilsError(f"Chromium could not render {page} ({dom.stderr.strip()[-300:]}).")
    return dom.stdout


def check_html(html_dir: str | os.PathLike, screenshots: str | os.PathLike = "screenshots",
               chapter: str = "book/notebooks/02_dynamics.html",
               min_figures: int = 1) -> list[str]:
    """Open index.html and one chapter in headless Chromium; return the problems found.

    Problems: a page that does not render, a chapter with fewer than ``min_figures`` images,
    an image whose file is missing or empty, any broken local link in the whole build, and
    any chapter page whose code inputs are not folded or that lacks its rerun command
    (:func:`chapter_page_problems`, on the built files of every chapter).
    Screenshots are saved as ``<screenshots>/index.png`` and ``<screenshots>/<chapter>.png``.
    """
    html_dir = Path(html_dir)
    screenshots = Path(screenshots)
    problems = []
    index = html_dir / "index.html"
    chapter_page = html_dir / chapter
    for page in (index, chapter_page):
        if not page.exists():
            problems.append(f"{page} does not exist; run make book first")
    if problems:
        return problems
    index_dom = render_page(index, screenshots / "index.png")
    if "<title>" not in index_dom.lower() and "<title " not in index_dom.lower():
        problems.append("index.html rendered without a title")
    chapter_dom = render_page(chapter_page, screenshots / f"{chapter_page.stem}.png",
                              height=9000)
    parser = _PageParser()
    parser.feed(chapter_dom)
    figures = [src for src in parser.images if "logo" not in src]
    if len(figures) < min_figures:
        problems.append(f"{chapter} shows {len(figures)} figures, expected at least {min_figures}")
    for src in figures:
        url = urlparse(src)
        if url.scheme == "data":
            continue
        path = Path(unquote(url.path)) if url.scheme == "file" else chapter_page.parent / src
        if not path.exists() or path.stat().st_size == 0:
            problems.append(f"{chapter}: figure {src} is missing or empty")
    problems += broken_links(html_dir)
    problems += chapter_page_problems(html_dir)
    return problems


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    if command == "preflight":
        return preflight(rest)
    if command == "prefill":
        try:
            return prefill(rest)
        except AnalysisUtilsError as error:
            print(error, file=sys.stderr)
            return 2
    if command == "fold-injected":
        for path in fold_injected_parameters(rest):
            print(f"folded the injected parameters cell of {path}")
        return 0
    if command == "check-outputs":
        problems = check_outputs(rest)
        if not rest:
            problems = ["no executed notebooks were given; run make notebooks first"]
    elif command == "check-html":
        html_dir = rest[0] if rest else "book/_build/html"
        screenshots = rest[1] if len(rest) > 1 else "screenshots"
        problems = check_html(html_dir, screenshots)
        if not problems:
            print(f"HTML check passed; screenshots in {Path(screenshots).resolve()}")
    else:
        print(f"Unknown command {command!r}; use preflight, prefill, fold-injected, "
              "check-outputs or check-html.", file=sys.stderr)
        return 2
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
