"""The model registry: one card per model, and ``load`` to build one at a scale with weights.

Family modules in ``analysis_utils.models`` call :func:`register` with a :class:`ModelCard`, a
``build(scale, steps, **options)`` function and a ``load_checkpoint(model, path)`` function
that reads the official file format. Users call:

- :func:`names` -> the registered model names;
- :func:`card` -> a model's card (family, recurrence, mechanism, loss timing, steps, readouts,
  preprocessing, default states, official weights, parameter count);
- :func:`load` -> a ``TimeResolvedModel`` in eval mode, with ``weights`` one of ``"official"``
  (full scale), ``"trained"`` (the mini zoo), ``"untrained"`` (seeded) or a checkpoint path.

Plugging in a model of your own means one ``plugins.register_model`` call around a plain
PyTorch model (or a ``TimeResolvedModel`` and one ``register`` call); every analysis then works
for it. Installed packages that declare the entry-point group ``analysis_utils.models`` are
registered on first use (see ``analysis_utils.plugins``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import torch

from .errors import AnalysisUtilsError, choice_error
from .preprocess import Preprocessing
from .weights import OfficialWeights, checked_trained_file, fetch, file_sha256

SCALES = ("mini", "full")
WEIGHT_KINDS = ("official", "trained", "untrained")

#: number of classifier outputs per scale
NUM_CLASSES = {"mini": 100, "full": 1000}


@dataclass(frozen=True)
class ModelCard:
    """Everything a reader needs to know about one catalogue model."""

    name: str
    display_name: str
    family: str
    recurrence: str  # "long-range", "within-layer", "within-layer + top-down", "none"
    mechanism: str  # "multiplicative", "additive", "additive, separate weights", ...
    loss_timing: str  # "both passes", "all steps", "final step", "single output"
    counterpart: str | None  # the feedforward counterpart's catalogue name
    step_unit: str  # "pass" or "t"
    default_steps: int
    readouts: tuple[str, ...]  # "penult", "logits", then per-area readouts
    headline_readout: str  # the study's readout for Table 2 ("logits"; "penult" for CORnet-RT)
    states: Mapping[str, int]  # named steps, 1-based: at least "baseline" (and "after")
    preprocessing: Mapping[str, Preprocessing]  # per scale
    official_weights: OfficialWeights | None
    colors: tuple[str, str]  # (baseline, after) colours of the reference study
    reference: str
    notes: str = ""
    code_version: str = "1"  # bump when a change to the model code changes its numbers
    build_options: Mapping[str, object] = field(default_factory=dict)  # defaults, for the card
    #: a plug-in's own folder of trained mini weights (``<name>.safetensors`` and the trainer's
    #: ``manifest.json``); None: the package's mini zoo
    trained_dir: Path | None = None

    @property
    def baseline(self) -> int:
        return self.states["baseline"]

    @property
    def after(self) -> int:
        return self.states.get("after", self.states["baseline"])

    @property
    def recurrent(self) -> bool:
        return self.default_steps > 1

    def input_size(self, scale: str) -> int:
        return self.preprocessing[check_scale(scale)].size

    def step_label(self, step: int) -> str:
        """How a reader sees step ``step`` (1-based): 'pass 3' or 't=5'."""
        return f"pass {step}" if self.step_unit == "pass" else f"t={step}"

    def row(self, scale: str = "mini") -> dict:
        """The card as a flat table row for ``scale``."""
        weights = self.official_weights
        return {
            "model": self.display_name,
            "name": self.name,
            "family": self.family,
            "recurrence": self.recurrence,
            "mechanism": self.mechanism,
            "loss timing": self.loss_timing,
            "counterpart": self.counterpart or "",
            "steps": self.default_steps,
            "baseline": self.step_label(self.baseline),
            "after": self.step_label(self.after),
            "headline readout": self.headline_readout,
            "readouts": ", ".join(self.readouts),
            "input": f"{self.input_size(scale)} px",
            "preprocessing": self.preprocessing[scale].describe(),
            "parameters": parameter_count(self.name, scale),
            "official weights": weights.url if weights else "",
            "sha256": weights.sha256 if weights else "",
        }


@dataclass(frozen=True)
class _Entry:
    card: ModelCard
    build: Callable[..., torch.nn.Module]
    load_checkpoint: Callable[[torch.nn.Module, Path], None]


_REGISTRY: dict[str, _Entry] = {}


def register(card: ModelCard, *, build: Callable[..., torch.nn.Module],
             load_checkpoint: Callable[[torch.nn.Module, Path], None]) -> None:
    """Add a model to the catalogue (family modules call this at import time)."""
    if card.name in _REGISTRY:
        raise ValueError(f"A model named {card.name!r} is registered already.")
    if "baseline" not in card.states:
        raise ValueError(f"The card of {card.name!r} must name a 'baseline' step.")
    _REGISTRY[card.name] = _Entry(card, build, load_checkpoint)


_ENTRY_POINTS_LOADED = False


def _ensure_loaded() -> None:
    """Import the families, then (once) the models of installed packages' entry points."""
    global _ENTRY_POINTS_LOADED
    from . import models  # noqa: F401  (importing registers the families)

    if not _ENTRY_POINTS_LOADED:
        _ENTRY_POINTS_LOADED = True  # first, so that an entry point may call names() itself
        from .plugins import load_entry_points

        load_entry_points()


#: the book's order: recurrent models as the reference study lists them, then feedforward ones;
#: models registered by users follow in registration order
BOOK_ORDER = ("lrm3", "lra3", "bl", "cornet_rt", "convrnn", "alexnet", "b")


def names() -> list[str]:
    """The names of every catalogue model, in the book's order."""
    _ensure_loaded()
    known = [name for name in BOOK_ORDER if name in _REGISTRY]
    return known + [name for name in _REGISTRY if name not in BOOK_ORDER]


def _entry(name: str) -> _Entry:
    _ensure_loaded()
    if name not in _REGISTRY:
        raise choice_error("model", name, _REGISTRY)
    return _REGISTRY[name]


def card(name: str) -> ModelCard:
    """The card of the model ``name``."""
    return _entry(name).card


def check_scale(scale: str) -> str:
    if scale not in SCALES:
        raise choice_error("scale", scale, SCALES)
    return scale


def default_weights(scale: str) -> str:
    """``"trained"`` (the mini zoo) at mini scale, ``"official"`` at full scale."""
    return "trained" if check_scale(scale) == "mini" else "official"


def build(name: str, scale: str = "mini", steps: int | None = None, seed: int = 0,
          **options) -> torch.nn.Module:
    """The architecture with seeded random weights (no checkpoint), in train mode.

    Seeding is local: the global torch random state is left as it was.
    """
    entry = _entry(name)
    check_scale(scale)
    if steps is not None and (not isinstance(steps, int) or steps < 1):
        raise AnalysisUtilsError(f"steps must be a positive integer or None, got {steps!r}.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = entry.build(scale=scale, steps=steps or entry.card.default_steps, **options)
    model.card = entry.card
    model.scale = scale
    return model


@dataclass(frozen=True)
class LoadIdentity:
    """What names the numbers of a loaded model, without its network: the card, the scale, the
    number of steps, the weights (kind and sha256 or seed; a checkpoint's path too) and the load
    arguments. :func:`identity` returns it; a model from :func:`load` carries the same
    ``weights_id``, ``load_spec`` and ``n_steps``, so the feature cache keys either alike."""

    card: ModelCard
    scale: str
    n_steps: int
    weights_id: Mapping
    load_spec: Mapping


#: the number of steps of each built architecture: (name, scale, steps, options) -> (the
#: registry entry it was built from, its number of steps); a re-registered name is built again
_STEPS_OF: dict[tuple, tuple[_Entry, int]] = {}


def _n_steps(entry: _Entry, name: str, scale: str, steps, seed: int, options: dict) -> int:
    """The number of steps ``build`` gives (built once per process for each architecture)."""
    key = (name, scale, steps, repr(sorted(options.items())))
    known = _STEPS_OF.get(key)
    if known is None or known[0] is not entry:
        known = (entry, build(name, scale=scale, steps=steps, seed=seed, **options).n_steps)
        _STEPS_OF[key] = known
    return known[1]


def _weights_source(entry: _Entry, name: str, scale: str, weights, seed: int
                    ) -> tuple[str, Path | None, dict]:
    """``(how to read the file, its path or None, the weights' id)`` for ``weights``, checked
    (an unknown kind, official weights at mini scale, a missing file: one sentence each)."""
    if isinstance(weights, str) and weights in WEIGHT_KINDS:
        if weights == "untrained":
            return "none", None, {"kind": "untrained", "seed": int(seed)}
        if weights == "official":
            if scale != "full":
                raise AnalysisUtilsError(
                    f"Official weights exist only at full scale; use scale='full', or "
                    f"weights='trained' for the mini zoo of {name!r}."
                )
            if entry.card.official_weights is None:
                raise AnalysisUtilsError(
                    f"{name!r} has no published weights; pass weights=<path> to a checkpoint in "
                    "its file format, or weights='untrained'."
                )
            path = fetch(entry.card.official_weights)
            return "official", path, {"kind": "official", "sha256": file_sha256(path)}
        if scale != "mini":
            raise AnalysisUtilsError(
                "The trained zoo exists only at mini scale; use weights='official' at full "
                "scale."
            )
        path, sha256 = checked_trained_file(name, scale)
        return "safetensors", path, {"kind": "trained", "sha256": sha256}
    if isinstance(weights, (str, os.PathLike)):
        path = Path(weights).expanduser()
        if not path.exists() and not _is_tf_prefix(path):
            valid = ", ".join(repr(k) for k in WEIGHT_KINDS)
            raise AnalysisUtilsError(
                f"weights={str(weights)!r} is neither one of {valid} nor an existing file; "
                "give one of those names or the path to a checkpoint."
            )
        reader = "safetensors" if path.suffix == ".safetensors" else "official"
        return reader, path, {"kind": "file", "path": str(path), "sha256": _path_sha256(path)}
    raise AnalysisUtilsError(
        f"weights must be one of {WEIGHT_KINDS} or a path, got {weights!r}."
    )


def _load_spec(name: str, scale: str, n_steps: int, options: dict) -> dict:
    return {"name": name, "scale": scale, "steps": n_steps,
            "options": {k: options[k] for k in sorted(options)}}


def identity(name: str, scale: str = "mini", weights: str | os.PathLike | None = None,
             seed: int = 0, steps: int | None = None, **options) -> LoadIdentity:
    """What :func:`load` with these arguments would load, without building or reading the
    network: the weights are checked and hashed as ``load`` does (same errors), the number of
    steps comes from building the architecture once per process. The feature cache is keyed by
    it, so a cached extraction needs no model."""
    entry = _entry(name)
    check_scale(scale)
    weights = default_weights(scale) if weights is None else weights
    _, _, weights_id = _weights_source(entry, name, scale, weights, seed)
    n_steps = _n_steps(entry, name, scale, steps, seed, options)
    return LoadIdentity(card=entry.card, scale=scale, n_steps=n_steps, weights_id=weights_id,
                        load_spec=_load_spec(name, scale, n_steps, options))


def load(name: str, scale: str = "mini", weights: str | os.PathLike | None = None,
         seed: int = 0, steps: int | None = None, device: str | torch.device = "cpu",
         **options) -> torch.nn.Module:
    """A catalogue model in eval mode with the requested weights.

    ``weights``: ``"official"`` (download, check the hash, convert; full scale only),
    ``"trained"`` (the mini zoo), ``"untrained"`` (random, seeded by ``seed``) or a path to a
    checkpoint in the official file format (or a ``.safetensors`` state dict of this package).
    ``None`` picks the default for the scale (see :func:`default_weights`).
    ``steps`` overrides the card's number of steps or passes; ``options`` go to the family
    (for example ConvRNN's presentation schedule).
    """
    entry = _entry(name)
    check_scale(scale)
    weights = default_weights(scale) if weights is None else weights
    model = build(name, scale=scale, steps=steps, seed=seed, **options)
    reader, path, weights_id = _weights_source(entry, name, scale, weights, seed)
    if reader == "safetensors":
        _load_safetensors(model, path)
    elif reader == "official":
        entry.load_checkpoint(model, path)
    model.weights_id = weights_id
    model.load_spec = _load_spec(name, scale, model.n_steps, options)
    return model.eval().to(device)


def _is_tf_prefix(path: Path) -> bool:
    """A TF checkpoint is named by its prefix; the files are ``<prefix>.index`` and ``.data-*``."""
    return Path(str(path) + ".index").exists()


def _path_sha256(path: Path) -> str:
    if path.exists():
        return file_sha256(path)
    return file_sha256(Path(str(path) + ".index"))  # TF checkpoint prefix


def _load_safetensors(model: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import load_file

    from .models.base import load_state_dict_strict

    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises several types for a corrupt file
        raise AnalysisUtilsError(
            f"Could not read {path} as a safetensors file ({exc}); check that the file is complete."
        ) from exc
    load_state_dict_strict(model, state, str(path))


@cache
def parameter_count(name: str, scale: str = "mini") -> int:
    """The number of parameters of ``name`` at ``scale`` (counted on the built model)."""
    model = build(name, scale=scale)
    return sum(p.numel() for p in model.parameters())


def table(scale: str = "mini"):
    """All model cards as a pandas DataFrame, one row per model."""
    import pandas as pd

    return pd.DataFrame([card(name).row(scale) for name in names()])
