"""The book's plumbing: chapter parameters, the "rendered with" header, and the build checks.

- :func:`check_parameters` validates a chapter's papermill ``parameters`` cell before any work
  and returns a :class:`ChapterParameters`; every mistake raises ``AnalysisUtilsError`` with one
  sentence that says what was expected and how to fix it.
- :func:`rendered_with` is the first output of every chapter: which scale, weights, probe and
  software rendered it, and a plain warning when the models are untrained.
- :func:`preflight` is what ``make book`` runs before executing any chapter: it reads the
  papermill ``-p`` pairs and stops with one sentence when trained weights are absent.
- :func:`prefill` extracts every feature the chapters will read (each chapter's defaults
  overridden by the ``-p`` pairs) into the feature cache, once, so the chapters can then run
  side by side and all read the cache (:func:`prefill_jobs` lists those extractions, chapter
  3's untrained reference of :func:`untrained_reference` included).
- :func:`check_outputs` fails when an executed notebook lacks outputs; :func:`check_html` opens
  the built pages in headless Chromium, saves screenshots, and fails on missing figures or
  broken links.

Command line (used by the Makefile)::

    python -m analysis_utils.book preflight -p weights untrained ...
    python -m analysis_utils.book prefill book/notebooks/_sources/*.ipynb -p weights untrained
    python -m analysis_utils.book check-outputs book/notebooks/*.ipynb
    python -m analysis_utils.book check-html book/_build/html screenshots
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

from .errors import AnalysisUtilsError

SCALES = ("mini", "full")
WEIGHT_KINDS = ("trained", "untrained", "official")
PROBES = ("tiny", "imagenet")
STAGE_READOUTS = ("penult", "logits")
CHAPTERS = ("01_model_catalogue", "02_dynamics", "03_orthogonality", "04_cross_model_rsa",
            "07_own_model")


@dataclass(frozen=True)
class ChapterParameters:
    """A chapter's checked parameters (tuples and dicts in place of the raw strings)."""

    scale: str
    weights: str
    probe: str
    data_dir: str | None
    models: tuple[str, ...]
    readouts: tuple[str, ...]
    baseline: dict[str, int] = field(default_factory=dict)
    after: dict[str, int] = field(default_factory=dict)
    n_perm: int = 1000
    seed: int = 0
    device: str = "auto"
    cache_dir: str | None = None
    images_per_category: int | None = None
    plugins: tuple[str, ...] = ()  # the plug-in modules imported (see analysis_utils.plugins)
    plugin_models: tuple[str, ...] = ()  # the models they registered

    def plugins_of(self, model: str) -> tuple[str, ...]:
        """The plug-in modules that registered ``model`` (none for a catalogue model)."""
        from .plugins import load_plugins

        return tuple(module for module, names in load_plugins(self.plugins).items()
                     if model in names)

    @property
    def untrained(self) -> bool:
        return self.weights == "untrained"

    def state_step(self, model: str, state: str) -> int:
        """The 1-based step of ``state`` ("baseline" or "after") for ``model``."""
        from . import catalogue

        overrides = self.baseline if state == "baseline" else self.after
        if model in overrides:
            return overrides[model]
        card = catalogue.card(model)
        return card.baseline if state == "baseline" else card.after

    def extract_kwargs(self) -> dict:
        """The keyword arguments every chapter passes to ``extract.features``."""
        return {"scale": self.scale, "weights": self.weights, "seed": self.seed,
                "device": self.device, "cache_dir": self.cache_dir}

    def weights_label(self) -> str:
        """How figure titles name the weights: "trained", "official" or "UNTRAINED (seed s)"."""
        if self.untrained:
            return f"UNTRAINED (random weights, seed {self.seed})"
        return "trained (mini zoo)" if self.weights == "trained" else "official checkpoints"


# --------------------------------------------------------------------------- validation


def _as_list(value, what: str) -> list:
    """A list from a list/tuple, or from a comma-separated string as papermill's -p gives."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise AnalysisUtilsError(
        f"{what} must be a list or a comma-separated string such as 'lrm3,bl', got {value!r}."
    )


def _positive_int(value, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise AnalysisUtilsError(f"{what} must be an integer of at least {minimum}, got {value!r}.")
    return value


def _step_overrides(value, what: str, models: tuple[str, ...]) -> dict[str, int]:
    """``{model: step}`` from a dict or a string 'lrm3=1,bl=2'; steps checked against the cards."""
    from . import catalogue

    if value is None or value == "" or value == {}:
        return {}
    if isinstance(value, str):
        pairs = {}
        for item in _as_list(value, what):
            name, sep, step = item.partition("=")
            if not sep or not step.strip().lstrip("-").isdigit():
                raise AnalysisUtilsError(
                    f"{what} must look like 'lrm3=1,bl=2' (model=step, steps from 1), "
                    f"got {value!r}."
                )
            pairs[name.strip()] = int(step)
        value = pairs
    if not isinstance(value, dict):
        raise AnalysisUtilsError(
            f"{what} must be a dict {{model: step}} or a string 'lrm3=1,bl=2', got {value!r}."
        )
    checked = {}
    for name, step in value.items():
        if name not in models:
            listed = ", ".join(models)
            raise AnalysisUtilsError(
                f"{what} names the model {name!r}, which is not among the chapter's models "
                f"({listed}); add it to models or remove it from {what}."
            )
        total = catalogue.card(name).default_steps
        if isinstance(step, bool) or not isinstance(step, int) or not 1 <= step <= total:
            raise AnalysisUtilsError(
                f"{what} gives {name!r} the step {step!r}, but its steps are 1..{total}; "
                "steps are numbered from 1."
            )
        checked[name] = step
    return checked


def check_parameters(*, scale="mini", weights="trained", probe="tiny", data_dir=None,
                     models=None, readouts=STAGE_READOUTS, baseline=None, after=None,
                     n_perm=1000, seed=0, device="auto", cache_dir=None,
                     images_per_category=None, plugins=None, check_weights: bool = True
                     ) -> ChapterParameters:
    """Check a chapter's parameters before any work; one clear sentence per mistake.

    ``plugins`` (comma-separated modules, see :func:`analysis_utils.plugins.load_plugins`) are
    imported first, so the models they register can be named in ``models``. ``models`` None
    (or "all") means every catalogue model, plug-ins included. ``check_weights`` confirms that
    the trained zoo has a file for every model when ``weights="trained"``.
    """
    from . import catalogue
    from .plugins import load_plugins

    loaded = load_plugins(plugins)

    if scale not in SCALES:
        raise AnalysisUtilsError(
            f"scale must be one of {SCALES}, got {scale!r}; use -p scale mini."
        )
    if weights not in WEIGHT_KINDS:
        raise AnalysisUtilsError(
            f"weights must be one of {WEIGHT_KINDS}, got {weights!r}; "
            "use -p weights untrained to run with random, seeded weights."
        )
    if weights == "trained" and scale != "mini":
        raise AnalysisUtilsError(
            "The trained zoo exists only at mini scale; use -p weights official at full scale."
        )
    if weights == "official" and scale != "full":
        raise AnalysisUtilsError(
            "Official checkpoints exist only at full scale; use -p scale full, or "
            "-p weights trained for the mini zoo."
        )
    if probe not in PROBES:
        raise AnalysisUtilsError(f"probe must be one of {PROBES}, got {probe!r}.")
    if probe == "imagenet" and scale != "full":
        raise AnalysisUtilsError(
            "The imagenet probe needs full-scale models (their 1000-way logits); use "
            "-p scale full, or -p probe tiny at mini scale."
        )
    if data_dir is not None and data_dir != "":
        if not Path(str(data_dir)).expanduser().is_dir():
            raise AnalysisUtilsError(
                f"data_dir {data_dir!r} is not a folder; give the folder that holds the probe "
                "images (for the tiny probe, the folder containing tiny-imagenet-200/)."
            )
        data_dir = str(Path(str(data_dir)).expanduser())
    else:
        data_dir = None

    known = catalogue.names()
    if models is None or models == "all":
        model_list = list(known)
    else:
        model_list = _as_list(models, "models")
        if not model_list:
            raise AnalysisUtilsError("models is empty; name at least one model, e.g. 'lrm3,bl'.")
    for name in model_list:
        if name not in known:
            listed = ", ".join(known)
            raise AnalysisUtilsError(f"Unknown model {name!r}; expected some of: {listed}.")
    if len(set(model_list)) != len(model_list):
        raise AnalysisUtilsError(f"models lists a model twice: {model_list}; name each once.")
    models = tuple(model_list)

    readouts = tuple(_as_list(readouts, "readouts"))
    if not readouts:
        raise AnalysisUtilsError("readouts is empty; use 'penult,logits'.")
    for readout in readouts:
        for name in models:
            offered = catalogue.card(name).readouts
            if readout not in offered:
                raise AnalysisUtilsError(
                    f"The readout {readout!r} does not exist for {name!r}; its readouts are: "
                    f"{', '.join(offered)}."
                )
    missing_stage = [r for r in STAGE_READOUTS if r not in readouts]
    if missing_stage:
        raise AnalysisUtilsError(
            f"readouts must include {missing_stage[0]!r}: the chapters compare the feature "
            "stage (penult) with the decision stage (logits)."
        )

    baseline = _step_overrides(baseline, "baseline", models)
    after = _step_overrides(after, "after", models)
    n_perm = _positive_int(n_perm, "n_perm")
    seed = _positive_int(seed, "seed", minimum=0)
    if images_per_category is not None:
        images_per_category = _positive_int(images_per_category, "images_per_category", 2)
        if images_per_category > 50:
            raise AnalysisUtilsError(
                f"images_per_category must be at most 50 (the probe has 50 images per "
                f"category), got {images_per_category}."
            )
    device = _check_device(device)
    if cache_dir is not None and cache_dir != "":
        cache_dir = str(Path(str(cache_dir)).expanduser())
    else:
        cache_dir = None

    if weights == "trained" and check_weights:
        missing = missing_trained(models, scale)
        if missing:
            raise AnalysisUtilsError(trained_missing_sentence(missing))

    return ChapterParameters(scale=scale, weights=weights, probe=probe, data_dir=data_dir,
                             models=models, readouts=readouts, baseline=baseline, after=after,
                             n_perm=n_perm, seed=seed, device=device, cache_dir=cache_dir,
                             images_per_category=images_per_category, plugins=tuple(loaded),
                             plugin_models=tuple(n for names in loaded.values() for n in names))


def check_count(value, what: str, minimum: int = 1) -> int:
    """A chapter-specific integer parameter (for example ``n_boot``), at least ``minimum``."""
    return _positive_int(value, what, minimum)


def check_seeds(value, what: str = "seeds") -> tuple[int, ...]:
    """Seeds from a list or a comma-separated string such as '0,1,2' (distinct, >= 0)."""
    if isinstance(value, int) and not isinstance(value, bool):  # papermill types "-p x 1" as 1
        value = [value]
    if not isinstance(value, (str, list, tuple)):
        raise AnalysisUtilsError(
            f"{what} must be a list or a comma-separated string of seeds such as '0,1,2', got "
            f"{value!r}."
        )
    items = _as_list(value, what)
    seeds = []
    for item in items:
        text = str(item).strip()
        if isinstance(item, bool) or not text.isdigit():
            raise AnalysisUtilsError(
                f"{what} must be non-negative integers such as '0,1,2', got {value!r}."
            )
        seeds.append(int(text))
    if len(seeds) < 2:
        raise AnalysisUtilsError(
            f"{what} needs at least 2 seeds to give a range, got {value!r}; use '0,1,2'."
        )
    if len(set(seeds)) != len(seeds):
        raise AnalysisUtilsError(f"{what} lists a seed twice: {value!r}; name each once.")
    return tuple(seeds)


def _check_device(device) -> str:
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device):
        raise AnalysisUtilsError(
            f"device must be 'auto', 'cpu', 'cuda', 'cuda:<index>' or 'mps', got {device!r}."
        )
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise AnalysisUtilsError(
                f"device {device!r} was asked for but CUDA is not available here; "
                "use -p device cpu (or auto)."
            )
    return device


def missing_trained(models, scale: str = "mini") -> list[str]:
    """The models in ``models`` that have no (valid) trained zoo file at ``scale``."""
    from .weights import trained_path

    missing = []
    for name in models:
        try:
            trained_path(name, scale)
        except AnalysisUtilsError:
            missing.append(name)
    return missing


def trained_missing_sentence(missing) -> str:
    return (
        f"Trained weights of the mini zoo are absent for {', '.join(missing)}; build the book "
        "with random, seeded weights instead: make book PARAMS=\"-p weights untrained\"."
    )


# --------------------------------------------------------------------------- the header


def software_versions() -> dict[str, str]:
    """Versions of Python and the packages whose numbers the book depends on."""
    import importlib.metadata as metadata

    versions = {"python": platform.python_version()}
    for package in ("analysis_utils", "torch", "numpy", "scipy", "pandas", "statsmodels",
                    "scikit-learn", "matplotlib"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def rendered_with(params: ChapterParameters, probe=None) -> str:
    """The chapter's first output, as Markdown: what rendered it, and whether it is untrained."""
    if probe is not None:
        n_categories = len(probe.category_ids) if hasattr(probe, "category_ids") else "?"
        n_images = len(probe.labels) if hasattr(probe, "labels") else "?"
        probe_text = f"`{params.probe}` ({n_categories} categories, {n_images} images)"
    else:
        per = params.images_per_category or 50
        probe_text = f"`{params.probe}` ({per} images per category)"
    versions = ", ".join(f"{k} {v}" for k, v in software_versions().items())
    lines = []
    if params.untrained:
        lines += [
            "```{warning}",
            "**These models are UNTRAINED** (random weights, seed "
            f"{params.seed}). Every number and figure in this chapter describes the "
            "architectures at initialisation, not what a trained model has learned. Build with "
            "trained weights to read the results as the study does.",
            "```",
            "",
        ]
    lines += [
        f"**Rendered with** scale `{params.scale}`, weights `{params.weights}`"
        + (f" (seed {params.seed})" if params.untrained else "")
        + f", probe {probe_text}, device `{params.device}`.",
        "",
        f"**Models:** {', '.join(params.models)}. **Readouts:** {', '.join(params.readouts)}. "
        f"**Permutations:** {params.n_perm}.",
        "",
    ]
    if params.plugins:
        lines += [f"**Plug-ins:** {', '.join(params.plugins)} (registering "
                  f"{', '.join(params.plugin_models)}).", ""]
    lines += [
        f"**Software:** {versions}.",
    ]
    return "\n".join(lines)


def open_chapter(params: ChapterParameters):
    """Load the chapter's probe, apply the figure style and show the "rendered with" header.

    Every chapter starts this way, right after its parameters are checked; returns the probe.
    """
    from IPython.display import Markdown, display

    from . import plotting, probes

    probe = probes.load(params.probe, data_dir=params.data_dir,
                        images_per_category=params.images_per_category or 50)
    plotting.apply_style()
    display(Markdown(rendered_with(params, probe)))
    return probe


def features_summary(features: dict, metadata: dict):
    """One row per model and readout: shape [T, N, D], whether it came from the feature cache,
    and the seconds ``extract.features`` took (a table each chapter shows after extraction)."""
    import pandas as pd

    rows = []
    for name, readouts in features.items():
        meta = metadata.get(name, {})
        from_cache = meta.get("cache", {}).get("from_cache", {})
        for readout, values in readouts.items():
            rows.append({"model": name, "readout": readout,
                         "steps T": int(values.shape[0]), "images N": int(values.shape[1]),
                         "units D": int(values.shape[2]),
                         "from cache": bool(from_cache.get(readout, False)),
                         "seconds": round(float(meta.get("seconds", float("nan"))), 2)})
    return pd.DataFrame(rows)


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
    names = _as_list(models, "models") if models and models != "all" else catalogue.names()
    missing = missing_trained(names, scale)
    if missing:
        print(trained_missing_sentence(missing), file=sys.stderr)
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


#: the parameters every chapter shares (and :func:`check_parameters` takes)
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


def reference_probe(probe, images_per_category: int):
    """``(probe cut to the first images_per_category images of every category, their indices
    in the full probe)``: the images of the untrained reference (probe order is category, then
    file, so the same images whatever the model)."""
    keep = probe.first_indices(images_per_category)
    cut = (probe if images_per_category == probe.images_per_category
           else probe.subset(images_per_category))
    return cut, keep


def untrained_reference(params: ChapterParameters, probe, seeds, images_per_category: int,
                        own_features: dict | None = None, progress: bool = False) -> dict:
    """``{seed: {model: {readout: [T, n, D]}}}``: untrained networks of the chapter's models, one
    per seed, on the reference images (see :func:`reference_probe`), both stage readouts.

    These are the reference for what training changed (chapter 3). When the chapter's own
    models are untrained, its seed is one of them: pass its features on the full probe as
    ``own_features`` and they are cut to the reference images instead of extracted again.
    :func:`prefill_jobs` lists the same extractions, so ``make book`` fills them beforehand.
    """
    from . import extract

    cut, keep = reference_probe(probe, images_per_category)
    reference = {}
    for seed in seeds:
        if params.untrained and seed == params.seed and own_features is not None:
            reference[seed] = {name: {readout: X[:, keep] for readout, X in
                                      own_features[name].items() if readout in STAGE_READOUTS}
                               for name in params.models}
            continue
        kwargs = {**params.extract_kwargs(), "weights": "untrained", "seed": seed}
        reference[seed] = {name: extract.features(name, cut, readouts=STAGE_READOUTS,
                                                  progress=progress, **kwargs)[0]
                           for name in params.models}
    return reference


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

    @property
    def label(self) -> str:
        if self.reference_images is None:
            return self.model
        return f"{self.model} seed {dict(self.options)['seed']}"


def prefill_jobs(notebooks, pairs: list[str]) -> list[ExtractionJob]:
    """Every extraction the chapters will read, once each: for each chapter (its defaults
    overridden by the ``-p`` pairs) its models' features, and the untrained reference of a
    chapter that has ``untrained_seeds`` (chapter 3; its own seed is cut from its features)."""
    jobs: list[ExtractionJob] = []
    for notebook in notebooks:
        values = chapter_parameters(notebook, pairs)
        params = check_parameters(**{k: v for k, v in values.items() if k in SHARED_PARAMETERS})
        where = dict(probe=params.probe, data_dir=params.data_dir,
                     images_per_category=params.images_per_category or 50)
        options = tuple(sorted(params.extract_kwargs().items()))
        jobs += [ExtractionJob(name, **where, reference_images=None, readouts=params.readouts,
                               options=options, plugins=params.plugins_of(name))
                 for name in params.models]
        if "untrained_seeds" in values:
            seeds = check_seeds(values["untrained_seeds"], "untrained_seeds")
            count = min(check_count(values["reference_images_per_category"],
                                    "reference_images_per_category", minimum=2),
                        where["images_per_category"])
            for seed in seeds:
                if params.untrained and seed == params.seed:
                    continue  # the chapter cuts these from its own features
                untrained = tuple(sorted({**dict(options), "weights": "untrained",
                                          "seed": seed}.items()))
                jobs += [ExtractionJob(name, **where, reference_images=count,
                                       readouts=STAGE_READOUTS, options=untrained,
                                       plugins=params.plugins_of(name))
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
        probe = reference_probe(probe, job.reference_images)[0]
    return probe


def job_is_cached(job: ExtractionJob) -> bool:
    """Whether every readout of ``job`` is already in the feature cache."""
    from . import extract

    return extract.is_cached(job.model, _job_probe(job), readouts=job.readouts,
                             **dict(job.options))


def run_extraction_job(job: ExtractionJob, threads: int) -> tuple[ExtractionJob, float, bool]:
    """Run one job with ``threads`` torch threads: ``(job, seconds, whether it was cached)``."""
    import torch

    from . import extract
    from .plugins import load_plugins

    torch.set_num_threads(threads)
    load_plugins(job.plugins)  # a spawned worker starts with the catalogue's own models only
    _, metadata = extract.features(job.model, _job_probe(job), readouts=job.readouts,
                                   progress=False, **dict(job.options))
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
            "analysis_utils.book prefill book/notebooks/_sources/*.ipynb -p weights untrained."
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
            if not cached and job.reference_images is None]
    reference = [(job, seconds) for job, seconds, cached in results
                 if not cached and job.reference_images is not None]
    if reference:
        seeds = sorted({dict(job.options)["seed"] for job, _ in reference})
        main.append(f"the untrained reference (seeds {', '.join(map(str, seeds))}, "
                    f"{len(reference)} model-seeds) {sum(s for _, s in reference):.1f} s")
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


def check_outputs(paths) -> list[str]:
    """Problems with executed notebooks: a code cell without outputs, or an error output."""
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
            if "parameters" in tags or "injected-parameters" in tags:
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
    an image whose file is missing or empty, and any broken local link in the whole build.
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
        print(f"Unknown command {command!r}; use preflight, prefill, check-outputs or check-html.",
              file=sys.stderr)
        return 2
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
