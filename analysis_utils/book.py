"""What the chapters call: their parameters, the "rendered with" header, opening a chapter.

The chapters' side of the book (``from analysis_utils import book`` in every notebook); what
``make book`` runs around them (preflight, prefill, output and HTML checks) is
:mod:`analysis_utils.build`.

- :func:`check_parameters` validates a chapter's papermill ``parameters`` cell before any work
  and returns a :class:`ChapterParameters`; every mistake raises ``AnalysisUtilsError`` with one
  sentence that says what was expected and how to fix it (:func:`check_count` and
  :func:`check_seeds` for a chapter's own integer and seed parameters).
- :func:`rendered_with` is the first output of every chapter: which scale, weights, probe and
  software rendered it, and a plain warning when the models are untrained;
  :func:`open_chapter` loads the probe, applies the figure style and shows it.
- :func:`load_features` gives every model's features on the chapter's probe;
  :func:`features_summary` is the table of them each chapter shows.
- :func:`untrained_reference` (on the images of :func:`reference_probe`) gives untrained
  networks of several seeds, chapter 3's reference for what training changed.
"""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import AnalysisUtilsError

SCALES = ("mini", "full")
WEIGHT_KINDS = ("trained", "untrained", "official")
PROBES = ("tiny", "imagenet")
STAGE_READOUTS = ("penult", "logits")
CHAPTERS = ("01_model_catalogue", "02_dynamics", "03_orthogonality", "04_cross_model_rsa",
            "05_findings", "06_perturbations", "07_own_model")


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


def as_list(value, what: str) -> list:
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
        for item in as_list(value, what):
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
        model_list = as_list(models, "models")
        if not model_list:
            raise AnalysisUtilsError("models is empty; name at least one model, e.g. 'lrm3,bl'.")
    for name in model_list:
        if name not in known:
            listed = ", ".join(known)
            raise AnalysisUtilsError(f"Unknown model {name!r}; expected some of: {listed}.")
    if len(set(model_list)) != len(model_list):
        raise AnalysisUtilsError(f"models lists a model twice: {model_list}; name each once.")
    models = tuple(model_list)

    readouts = tuple(as_list(readouts, "readouts"))
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
    items = as_list(value, what)
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
                    "scikit-learn", "matplotlib", "seaborn"):
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


def load_features(params: ChapterParameters, probe, readouts=None) -> tuple[dict, dict]:
    """``(features, metadata)``: ``{model: {readout: [T, N, D]}}`` and ``{model: metadata}`` of
    every model of the chapter on ``probe`` (its readouts, or ``readouts``), from the feature
    cache when ``make book`` prefilled it; :func:`features_summary` shows them."""
    from . import extract

    features, metadata = {}, {}
    for name in params.models:
        features[name], metadata[name] = extract.features(
            name, probe, readouts=params.readouts if readouts is None else readouts,
            progress=False, **params.extract_kwargs())
    return features, metadata


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
    :func:`analysis_utils.build.prefill_jobs` lists the same extractions, so ``make book``
    fills them beforehand.
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
