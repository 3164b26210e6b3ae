"""Bringing a user's own model in: a time-resolved adapter, plug-in modules, entry points.

- :func:`time_resolved` turns an ordinary PyTorch model into a :class:`TimeResolvedModel`: it
  registers a forward hook on each named submodule for the length of one forward pass, and each
  call of that module becomes one step (pooled inside the hook, as every catalogue model pools
  inside its pass). A recurrent model reuses its modules, so a module called T times gives T
  steps; a feedforward model is the one-step case. A module called a different number of times
  than ``steps``, or not at all, is refused with one sentence.
- :func:`register_model` puts such a model in the catalogue in one call (a card with plain
  defaults, the adapter around the user's ``build``, and a loader for ``torch.save`` files), so
  every chapter, the feature cache and the trainer work for it.
- :func:`load_plugins` imports the modules named by the chapters' ``plugins`` parameter
  ("mypkg.models,other.module"); each must register at least one model when imported.
- :func:`load_entry_points` imports what installed packages declare in the entry-point group
  ``analysis_utils.models`` (the catalogue calls it once, on first use), so an installed
  package registers its models without any parameter.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import catalogue, preprocess
from .errors import AnalysisUtilsError
from .models.base import TimeResolvedModel

ENTRY_POINT_GROUP = "analysis_utils.models"

#: "path", "path:output", "path:input", optionally with "[k]" for one element of a tuple
_TARGET = re.compile(r"^(?P<path>[A-Za-z0-9_.]*)(?::(?P<side>input|output))?"
                     r"(?:\[(?P<index>\d+)\])?$")

#: the loss timings the trainer knows ("both passes" is LRM's own and needs its pass logic)
LOSS_TIMINGS = ("all steps", "final step", "single output")

#: (baseline, after) colours of a plug-in without its own: amber, unlike every catalogue model
DEFAULT_COLORS = ("#B45309", "#F59E0B")


# --------------------------------------------------------------------------- the adapter


@dataclass(frozen=True)
class Target:
    """Where one readout is read: a submodule's output (or first input), or one element of it."""

    readout: str
    path: str  # "" is the model itself
    side: str  # "output" or "input"
    index: int | None  # an element of a tuple/list output (or of the positional inputs)

    @property
    def text(self) -> str:
        suffix = "" if self.side == "output" else ":input"
        return self.path + suffix + ("" if self.index is None else f"[{self.index}]")


def check_readout_targets(readouts) -> dict[str, Target]:
    """``{readout: Target}`` from ``{readout: "module.path"}``, penult and logits first."""
    if not isinstance(readouts, Mapping) or not readouts:
        raise AnalysisUtilsError(
            "readouts must be a dict {readout name: module path}, for example "
            "{'penult': 'cell', 'logits': 'classifier'}."
        )
    missing = [stage for stage in TimeResolvedModel.STAGES if stage not in readouts]
    if missing:
        raise AnalysisUtilsError(
            f"readouts must name the module of {missing[0]!r}: every chapter compares the "
            "feature stage (penult) with the decision stage (logits)."
        )
    names = list(TimeResolvedModel.STAGES) + [
        name for name in readouts if name not in TimeResolvedModel.STAGES]
    for name in names:
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
            raise AnalysisUtilsError(
                f"A readout name must be letters, digits and '_', got {name!r}."
            )
    return {name: _parse_target(name, readouts[name]) for name in names}


def _parse_target(readout: str, text) -> Target:
    match = _TARGET.match(text) if isinstance(text, str) else None
    if match is None:
        raise AnalysisUtilsError(
            f"The readout {readout!r} names {text!r}; name a submodule by its dotted path as in "
            "model.named_modules(), for example 'head.fc', 'cell:input' or 'lstm[0]'."
        )
    index = match["index"]
    return Target(readout, match["path"], match["side"] or "output",
                  None if index is None else int(index))


class TimeResolvedAdapter(TimeResolvedModel):
    """A plain PyTorch ``model`` whose readouts are recorded at every call of named submodules.

    ``readouts(x, names)`` runs ``model(x)`` once with a forward hook on the submodule of each
    requested readout; call ``k`` of that submodule is step ``k``, pooled (global average over
    space) inside the hook. The model's own return value is not used. The wrapped model is
    ``self.model`` (its parameters are this module's, under the prefix ``model.``).
    """

    def __init__(self, model: nn.Module, readouts: Mapping[str, str], steps: int):
        if not isinstance(model, nn.Module):
            raise AnalysisUtilsError(
                f"time_resolved needs a torch.nn.Module, got {type(model).__name__}; pass the "
                "model instance, not its class or its output."
            )
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise AnalysisUtilsError(
                f"steps must be a positive integer (how many times the readout modules run in "
                f"one forward pass), got {steps!r}."
            )
        targets = check_readout_targets(readouts)
        super().__init__(steps, tuple(targets))
        self.model = model
        self.targets = targets
        modules = dict(model.named_modules())
        for name, target in targets.items():
            if target.path not in modules:
                close = [p for p in modules if p and p.split(".")[-1] == target.path.split(".")[-1]]
                listed = ", ".join(repr(p) for p in (close or [p for p in modules if p])[:8])
                raise AnalysisUtilsError(
                    f"The readout {name!r} names the module {target.path!r}, which "
                    f"{type(model).__name__} does not have; use a path from named_modules(), "
                    f"such as {listed}."
                )

    def _readouts(self, x: torch.Tensor, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
        steps: dict[str, list[torch.Tensor]] = {name: [] for name in names}
        handles = []
        try:
            for name in names:
                target = self.targets[name]
                module = self.model.get_submodule(target.path)
                handles.append(module.register_forward_hook(self._hook(target, steps[name])))
            self.model(x)
        finally:
            for handle in handles:
                handle.remove()
        for name in names:
            self._check_calls(self.targets[name], steps[name])
        return {name: torch.stack(values, dim=0) for name, values in steps.items()}

    def _hook(self, target: Target, store: list) -> Callable:
        def record(module, args, output):
            value = args if target.side == "input" else output
            if target.side == "input" and target.index is None:
                value = args[0] if args else None
            elif target.index is not None:
                value = (value[target.index] if isinstance(value, (tuple, list))
                         and target.index < len(value) else None)
            store.append(self._pooled(target, value))
        return record

    def _pooled(self, target: Target, value) -> torch.Tensor:
        if isinstance(value, torch.Tensor) and value.dim() == 4:
            return value.mean(dim=(2, 3)).float()
        if isinstance(value, torch.Tensor) and value.dim() == 2:
            return value.float()
        if isinstance(value, (tuple, list)):
            raise AnalysisUtilsError(
                f"The readout {target.readout!r} ({target.text!r}) is a {type(value).__name__} "
                f"of {len(value)}; pick one element with '{target.text}[0]'."
            )
        found = (f"a tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor)
                 else type(value).__name__)
        raise AnalysisUtilsError(
            f"The readout {target.readout!r} ({target.text!r}) gave {found}; a readout must be "
            "a feature map [N, C, H, W] or a vector [N, D]: name another module."
        )

    def _check_calls(self, target: Target, values: list[torch.Tensor]) -> None:
        calls = len(values)
        what = (f"The module {target.path!r}" if target.path else "The model itself")
        where = f"(readout {target.readout!r}) of {type(self.model).__name__}"
        if calls == 0:
            raise AnalysisUtilsError(
                f"{what} {where} was not called in a forward pass, so it gives no steps; name a "
                "module that the forward pass runs."
            )
        if calls != self.n_steps:
            raise AnalysisUtilsError(
                f"{what} {where} ran {calls} times in one forward pass, but steps={self.n_steps}; "
                f"pass steps={calls}, or name a module that runs once per step."
            )
        shapes = sorted({tuple(v.shape) for v in values})
        if len(shapes) > 1:
            raise AnalysisUtilsError(
                f"{what} {where} gave pooled shapes {shapes} at different steps; a readout must "
                "have the same shape at every step: name a module that does."
            )


    @property
    def paths(self) -> dict[str, str]:
        """``{readout: where it is read}``, as given to :func:`time_resolved`."""
        return {name: target.text for name, target in self.targets.items()}


def readout_table(model: TimeResolvedModel, x: torch.Tensor):
    """One row per readout of ``model`` on the batch ``x``: where the adapter reads it, and the
    shape [T, N, D] it returns (a DataFrame; "written by hand" for a TimeResolvedModel)."""
    import pandas as pd

    with torch.inference_mode():
        values = model.readouts(x)
    paths = model.paths if isinstance(model, TimeResolvedAdapter) else {}
    return pd.DataFrame([{"readout": name, "module (hook)": paths.get(name, "written by hand"),
                          "steps T": int(v.shape[0]), "images N": int(v.shape[1]),
                          "units D": int(v.shape[2])} for name, v in values.items()])


def time_resolved(model: nn.Module, readouts: Mapping[str, str], steps: int
                  ) -> TimeResolvedAdapter:
    """``model`` as a time-resolved model: ``readouts`` maps each readout to a submodule path.

    ``readouts`` must name ``"penult"`` and ``"logits"`` and may add more (per-area readouts).
    A path is as in ``model.named_modules()``; ``"path"`` records the module's output,
    ``"path:input"`` its first positional input (for example the penultimate features as the
    input of the classifier), and ``"...[k]"`` element ``k`` of a tuple. ``steps`` is how many
    times each named module runs in one forward pass (1 for a feedforward model).
    """
    return TimeResolvedAdapter(model, readouts, steps)


# --------------------------------------------------------------------------- registering


def load_torch_state_dict(model: TimeResolvedAdapter, path) -> None:
    """Load a ``torch.save(model.state_dict())`` file (or ``{'state_dict': ...}``) of the user's
    model into the adapter, every key and shape checked."""
    from .models.base import load_state_dict_strict

    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad, truncated or foreign file
        raise AnalysisUtilsError(
            f"Could not read {path} as a PyTorch checkpoint ({type(exc).__name__}); save the "
            "model's weights with torch.save(model.state_dict(), path)."
        ) from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AnalysisUtilsError(
            f"{path} does not hold a state dict of tensors; save the model's weights with "
            "torch.save(model.state_dict(), path)."
        )
    load_state_dict_strict(model.model, state, str(path))


def _source_version(build: Callable) -> str:
    """The sha256 of the file that defines ``build``: editing the model's file invalidates its
    cached features."""
    try:
        source = Path(inspect.getsourcefile(build)).read_bytes()
    except (TypeError, OSError) as exc:
        raise AnalysisUtilsError(
            "Could not read the source file of build to version the feature cache; pass "
            "code_version='1' to register_model (and change it whenever the model changes)."
        ) from exc
    return "source " + hashlib.sha256(source).hexdigest()[:16]


def register_model(name: str, build: Callable[..., nn.Module], *, readouts: Mapping[str, str],
                   steps: int, display_name: str | None = None, family: str | None = None,
                   recurrence: str = "within-layer", mechanism: str = "user-defined",
                   loss_timing: str | None = None, counterpart: str | None = None,
                   states: Mapping[str, int] | None = None,
                   preprocessing: Mapping[str, preprocess.Preprocessing] | None = None,
                   step_unit: str = "t", headline_readout: str = "logits",
                   colors: tuple[str, str] = DEFAULT_COLORS, reference: str = "",
                   notes: str = "", code_version: str | None = None,
                   load_checkpoint: Callable | None = None,
                   trained_dir: str | os.PathLike | None = None) -> catalogue.ModelCard:
    """Register a plain PyTorch model in the catalogue; returns its card.

    ``build(scale=..., steps=...)`` returns the user's ``nn.Module`` for ``scale`` ('mini':
    64 px, 100 classes; 'full': 1000 classes) unrolled for ``steps`` steps; it is wrapped by
    :func:`time_resolved` with ``readouts``. ``steps`` is the default number of steps.
    ``loss_timing`` ('all steps' or 'final step'; 'single output' for one step) is what the
    trainer uses. ``states`` defaults to baseline step 1 and after the last step;
    ``preprocessing`` to the catalogue's ImageNet recipe (64 px at mini scale, 224 px at full
    scale). ``code_version`` defaults to a hash of the file that defines ``build``, so editing
    that file invalidates the cached features. Weights given as a path load with
    ``load_checkpoint`` (default: a ``torch.save(state_dict)`` file of the user's model).
    ``trained_dir`` is the folder where the project's trainer writes (``train --out``) and
    ``weights="trained"`` reads the model's mini weights (default: the package's mini zoo).
    """
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise AnalysisUtilsError(
            f"A model name must be lower-case letters, digits and '_' starting with a letter "
            f"(it names cache folders and zoo files), got {name!r}."
        )
    if name in catalogue.names():
        raise AnalysisUtilsError(
            f"A model named {name!r} is in the catalogue already; choose another name."
        )
    if not callable(build) or isinstance(build, nn.Module):
        raise AnalysisUtilsError(
            "build must be a function build(scale, steps) that returns a new nn.Module, for "
            "example lambda scale, steps: MyNet(NUM_CLASSES[scale], steps)."
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise AnalysisUtilsError(f"steps must be a positive integer, got {steps!r}.")
    readout_names = tuple(check_readout_targets(readouts))
    if loss_timing is None:
        loss_timing = "final step" if steps > 1 else "single output"
    if headline_readout not in readout_names:
        raise AnalysisUtilsError(
            f"headline_readout {headline_readout!r} is not one of the readouts "
            f"({', '.join(readout_names)}); name one of them."
        )
    if loss_timing not in LOSS_TIMINGS or (loss_timing == "single output") != (steps == 1):
        raise AnalysisUtilsError(
            f"loss_timing {loss_timing!r} does not fit a model of {steps} step(s); use 'all "
            "steps' or 'final step' for a recurrent model, 'single output' for one step."
        )
    if states is None:
        states = {"baseline": 1, "after": steps} if steps > 1 else {"baseline": 1}
    bad = {k: v for k, v in dict(states).items()
           if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= steps}
    if "baseline" not in states or bad:
        raise AnalysisUtilsError(
            f"states must name a 'baseline' step (and optionally 'after'), each from 1 to "
            f"{steps}, got {dict(states)!r}."
        )
    card = catalogue.ModelCard(
        name=name, display_name=display_name or name, family=family or "plug-in",
        recurrence=recurrence if steps > 1 else "none", mechanism=mechanism,
        loss_timing=loss_timing, counterpart=counterpart, step_unit=step_unit,
        default_steps=steps, readouts=readout_names, headline_readout=headline_readout,
        states=dict(states),
        preprocessing=dict(preprocessing) if preprocessing is not None else {
            "mini": preprocess.mini_imagenet(64), "full": preprocess.imagenet(224, 256)},
        official_weights=None, colors=tuple(colors), reference=reference, notes=notes,
        code_version=code_version or _source_version(build),
        trained_dir=Path(trained_dir).resolve() if trained_dir is not None else None,
    )
    readouts = dict(readouts)

    def build_adapted(scale: str, steps: int, **options) -> TimeResolvedAdapter:
        return time_resolved(build(scale=scale, steps=steps, **options), readouts, steps)

    build_adapted.__module__ = build.__module__  # the models of a module: see models_of
    catalogue.register(card, build=build_adapted,
                       load_checkpoint=load_checkpoint or load_torch_state_dict)
    return card


# --------------------------------------------------------------------------- plug-in modules

#: module name -> the models it registered (filled by load_plugins)
_LOADED: dict[str, tuple[str, ...]] = {}


def models_of(module_name: str) -> tuple[str, ...]:
    """The catalogue models whose build function is defined in ``module_name``."""
    return tuple(name for name in catalogue.names()
                 if getattr(catalogue._entry(name).build, "__module__", None) == module_name)


def check_plugins(spec) -> tuple[str, ...]:
    """Module names from ``None``/"" (none), a comma-separated string or a list of strings."""
    if spec is None or spec == "":
        return ()
    if isinstance(spec, str):
        items = [item.strip() for item in spec.split(",") if item.strip()]
    elif isinstance(spec, (list, tuple)) and all(isinstance(item, str) for item in spec):
        items = [item.strip() for item in spec]
    else:
        raise AnalysisUtilsError(
            f"plugins must be a comma-separated string of module names such as "
            f"'examples.conv_gru', got {spec!r}."
        )
    for item in items:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", item):
            raise AnalysisUtilsError(
                f"plugins names {item!r}, which is not a module name; give importable modules "
                "separated by commas, such as 'examples.conv_gru,mypkg.models'."
            )
    return tuple(dict.fromkeys(items))


def _import(module_name: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise AnalysisUtilsError(
                f"The plugin module {module_name!r} cannot be imported (no module named "
                f"{exc.name!r}); install it or put its folder on PYTHONPATH (make book puts the "
                "repository root there, so -p plugins examples.conv_gru works)."
            ) from exc
        raise AnalysisUtilsError(
            f"Importing the plugin module {module_name!r} failed because it needs the missing "
            f"module {exc.name!r}; install that in this environment."
        ) from exc
    except AnalysisUtilsError:
        raise
    except Exception as exc:
        raise AnalysisUtilsError(
            f"Importing the plugin module {module_name!r} raised {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}; fix the module."
        ) from exc


def load_plugins(spec) -> dict[str, tuple[str, ...]]:
    """Import each module of ``spec`` (see :func:`check_plugins`); ``{module: its models}``.

    Importing a module registers its models (with :func:`register_model` or
    ``catalogue.register``); a module that registers none is refused. Loading the same module
    again is a no-op that returns the same models.
    """
    loaded = {}
    for module_name in check_plugins(spec):
        if module_name not in _LOADED:
            before = set(catalogue.names())
            already = module_name in sys.modules
            _import(module_name)
            new = tuple(n for n in catalogue.names() if n not in before)
            _LOADED[module_name] = models_of(module_name) if already and not new else new
        if not _LOADED[module_name]:
            del _LOADED[module_name]
            raise AnalysisUtilsError(
                f"The plugin module {module_name!r} registers no model when imported; call "
                "analysis_utils.plugins.register_model(...) at its top level."
            )
        loaded[module_name] = _LOADED[module_name]
    return loaded


def load_entry_points() -> dict[str, tuple[str, ...]]:
    """Load every entry point of the group ``analysis_utils.models``; ``{entry point: models}``.

    An entry point names a module that registers models when imported
    (``mine = "mypkg.models"``) or a function that registers them when called
    (``mine = "mypkg.models:register"``). One that registers nothing is refused.
    """
    from importlib.metadata import entry_points

    loaded = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        where = f"the entry point {point.name!r} = {point.value!r} of group {ENTRY_POINT_GROUP!r}"
        before = set(catalogue.names())
        try:
            target = point.load()
            if callable(target):
                target()
        except AnalysisUtilsError:
            raise
        except Exception as exc:
            raise AnalysisUtilsError(
                f"Loading {where} raised {type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}; fix or uninstall that package."
            ) from exc
        new = tuple(n for n in catalogue.names() if n not in before)
        if not new:
            raise AnalysisUtilsError(
                f"Loading {where} registered no model; it must name a module that calls "
                "register_model at import time, or a function that does."
            )
        loaded[point.name] = new
    return loaded

