"""Time-resolved readouts of a catalogue model over a probe, computed once and cached.

:func:`features` is the one entry point every chapter uses::

    feats, meta = extract.features("cornet_rt", probe, scale="mini", weights="untrained")
    feats["penult"]   # float32 Tensor[T, N, D]; index i along T is step t = i + 1
    meta["probe"]["content_hash"], meta["weights"], meta["versions"], meta["cache"]["files"]

The pass is batched, runs in ``torch.inference_mode`` on CUDA when available, shows a progress
bar with images per second, and pools inside the model (``TimeResolvedModel.readouts``), so
memory holds one batch of unpooled maps plus the pooled outputs. Each readout is cached by
:mod:`analysis_utils.store` under a key of everything that changes its numbers; a second call
reads the cache, and a request for a readout not cached yet computes only the missing ones.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from tqdm.auto import tqdm

from . import __version__, catalogue, store
from .errors import AnalysisUtilsError, choice_error
from .probes import Probe

#: default images per batch, by (device type, scale)
DEFAULT_BATCH = {("cpu", "mini"): 250, ("cpu", "full"): 32,
                 ("cuda", "mini"): 1000, ("cuda", "full"): 250}

#: threads that decode-and-transform the next batch while the model runs the current one
PREPROCESS_THREADS = min(8, os.cpu_count() or 1)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else must be a usable device."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise AnalysisUtilsError(
            f"Unknown device {device!r}; use 'auto', 'cpu' or 'cuda' (optionally 'cuda:<index>')."
        ) from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise AnalysisUtilsError(
            f"device={device!r} was asked for but CUDA is not available here; use device='cpu' "
            "or 'auto'."
        )
    if resolved.type not in ("cpu", "cuda"):
        raise AnalysisUtilsError(f"Unsupported device {device!r}; use 'auto', 'cpu' or 'cuda'.")
    return resolved


def _check_readouts(name: str, readouts: Iterable[str] | str) -> tuple[str, ...]:
    valid = catalogue.card(name).readouts
    requested = (readouts,) if isinstance(readouts, str) else tuple(readouts)
    if not requested:
        raise AnalysisUtilsError("Ask for at least one readout, for example ('penult', 'logits').")
    for readout in requested:
        if readout not in valid:
            raise choice_error(f"readout for {name!r}", readout, valid)
    return tuple(dict.fromkeys(requested))  # unique, in the order asked


def _check_steps(steps) -> int | None:
    if steps is None:
        return None
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise AnalysisUtilsError(
            f"steps must be a positive integer (the number of steps or passes to unroll) or None "
            f"for the card's default, got {steps!r}."
        )
    return steps


def _check_batch_size(batch_size, device: torch.device, scale: str) -> int:
    if batch_size is None:
        return DEFAULT_BATCH[(device.type, scale)]
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise AnalysisUtilsError(
            f"batch_size must be a positive integer or None, got {batch_size!r}."
        )
    return batch_size


def _card_summary(card: catalogue.ModelCard) -> dict:
    weights = card.official_weights
    return {
        "name": card.name, "display_name": card.display_name, "family": card.family,
        "recurrence": card.recurrence, "mechanism": card.mechanism,
        "loss_timing": card.loss_timing, "counterpart": card.counterpart,
        "step_unit": card.step_unit, "default_steps": card.default_steps,
        "readouts": list(card.readouts), "headline_readout": card.headline_readout,
        "states": dict(card.states), "code_version": card.code_version,
        "reference": card.reference,
        "official_weights": {"url": weights.url, "sha256": weights.sha256} if weights else None,
    }


def software_versions() -> dict:
    import numpy

    return {"analysis_utils": __version__, "torch": torch.__version__,
            "torchvision": importlib.metadata.version("torchvision"), "numpy": numpy.__version__,
            "python": platform.python_version()}


def _check_perturbation(perturbation):
    from .perturb import PerturbationSpec

    if perturbation is not None and not isinstance(perturbation, PerturbationSpec):
        raise AnalysisUtilsError(
            "perturbation must be None or an analysis_utils.perturb.PerturbationSpec(name, "
            f"level, seed), got {type(perturbation).__name__}."
        )
    return perturbation


def cache_spec(model, probe: Probe, readout: str, perturbation=None) -> dict:
    """Everything that changes the numbers of one readout of ``model`` over ``probe``.

    ``model``: a loaded model (:func:`analysis_utils.catalogue.load`) or its
    :class:`analysis_utils.catalogue.LoadIdentity` (:func:`analysis_utils.catalogue.identity`):
    both give the same spec.

    A perturbation (:class:`analysis_utils.perturb.PerturbationSpec`) other than level 0 adds
    its key; level 0 (the clean pixels) keeps the clean entry's key, so it reads the clean
    features.
    """
    card = model.card
    weights = {k: v for k, v in model.weights_id.items() if k != "path"}  # the hash names a file
    spec = {
        "model": card.name,
        "scale": model.scale,
        "load_spec": model.load_spec,
        "steps": model.n_steps,
        "weights": weights,
        "code_version": card.code_version,
        "preprocessing": card.preprocessing[model.scale].spec,
        "probe": {"name": probe.name, "content_hash": probe.content_hash},
        "readout": readout,
    }
    if perturbation is not None and not perturbation.is_identity:
        spec["perturbation"] = perturbation.key()
    return spec


def features(model_name: str, probe: Probe, scale: str = "mini",
             weights: str | os.PathLike | None = None, seed: int = 0,
             readouts: Sequence[str] | str = ("penult", "logits"), steps: int | None = None,
             device: str | torch.device = "auto", batch_size: int | None = None,
             cache_dir: str | os.PathLike | None = None, force: bool = False,
             model_options: dict | None = None, progress: bool = True, perturbation=None
             ) -> tuple[dict[str, torch.Tensor], dict]:
    """The pooled readouts of ``model_name`` at every step over ``probe``, and their metadata.

    Returns ``(features, metadata)``: ``features[readout]`` is a float32 CPU tensor [T, N, D]
    (T steps, N probe images in probe order, D units), index i along T being step t = i + 1.
    ``metadata`` holds the card's fields, the weights (kind and sha256 or seed), the probe
    (name, content hash, size), the preprocessing, the steps and their labels, the software
    versions, the device, and ``cache`` (root, entry file per readout, which came from cache).

    ``weights``: "trained" (the mini zoo), "official" (full scale), "untrained" (seeded by
    ``seed``) or a checkpoint path; ``None`` is the scale's default ("trained" at mini,
    "official" at full). ``steps`` overrides the card's number of steps; ``model_options`` go to
    the family (for example a ConvRNN schedule). ``force=True`` recomputes and overwrites.
    ``perturbation`` (a :class:`analysis_utils.perturb.PerturbationSpec`) perturbs the probe's
    pixels before the card's preprocessing (:func:`analysis_utils.perturb.perturb_probe`); it
    is part of the cache key and of ``metadata["perturbation"]`` (None when clean).
    """
    if not isinstance(probe, Probe):
        raise AnalysisUtilsError(
            "probe must be a Probe from analysis_utils.probes.load(...), got "
            f"{type(probe).__name__}."
        )
    card = catalogue.card(model_name)
    catalogue.check_scale(scale)
    readouts = _check_readouts(model_name, readouts)
    steps = _check_steps(steps)
    perturbation = _check_perturbation(perturbation)
    target = resolve_device(device)
    batch_size = _check_batch_size(batch_size, target, scale)
    root = store.cache_dir(cache_dir)
    started = time.perf_counter()

    loaded = catalogue.identity(model_name, scale=scale, weights=weights, seed=seed,
                                steps=steps, **(model_options or {}))  # no network: cheap
    specs = {readout: cache_spec(loaded, probe, readout, perturbation) for readout in readouts}
    results: dict[str, torch.Tensor] = {}
    from_cache: dict[str, bool] = {}
    if not force:
        for readout, spec in specs.items():
            hit = store.load(root, model_name, spec)
            if hit is not None:
                results[readout] = hit[0]
                from_cache[readout] = True
    missing = [readout for readout in readouts if readout not in results]

    metadata = {
        "model": model_name,
        "card": _card_summary(card),
        "scale": scale,
        "weights": dict(loaded.weights_id),
        "load_spec": loaded.load_spec,
        "preprocessing": card.preprocessing[scale].spec,
        "probe": probe.describe(),
        "steps": loaded.n_steps,
        "step_labels": [card.step_label(t) for t in range(1, loaded.n_steps + 1)],
        "versions": software_versions(),
        "device": str(target),
        "perturbation": (perturbation.key() if perturbation is not None
                         and not perturbation.is_identity else None),
    }
    if missing:
        images = None
        if perturbation is not None and not perturbation.is_identity:
            from .perturb import perturb_probe

            images = perturb_probe(perturbation, probe)
        model = catalogue.load(model_name, scale=scale, weights=weights, seed=seed, steps=steps,
                               device=target, **(model_options or {}))
        if model.load_spec != loaded.load_spec:
            raise AnalysisUtilsError(
                f"{model_name!r} built with {model.n_steps} steps but catalogue.identity "
                f"reported {loaded.n_steps}; its build function must give the same number of "
                "steps for the same arguments."
            )
        computed = run_model(model, probe, missing, batch_size=batch_size, device=target,
                             progress=progress, description=f"{model_name} ({scale})",
                             images=images)
        for readout in missing:
            store.save(root, model_name, specs[readout], computed[readout],
                       {**metadata, "readout": readout})
            results[readout] = computed[readout]
            from_cache[readout] = False

    metadata["readouts"] = list(readouts)
    metadata["shapes"] = {readout: list(results[readout].shape) for readout in readouts}
    metadata["cache"] = {
        "root": str(root),
        "files": {r: str(store.entry_paths(root, model_name, store.key(specs[r]))[0])
                  for r in readouts},
        "from_cache": {r: from_cache[r] for r in readouts},
    }
    metadata["seconds"] = time.perf_counter() - started
    return {readout: results[readout] for readout in readouts}, metadata


def is_cached(model_name: str, probe: Probe, scale: str = "mini",
              weights: str | os.PathLike | None = None, seed: int = 0,
              readouts: Sequence[str] | str = ("penult", "logits"), steps: int | None = None,
              device: str | torch.device = "auto", cache_dir: str | os.PathLike | None = None,
              model_options: dict | None = None, perturbation=None) -> bool:
    """Whether :func:`features` with these arguments would find every readout in the cache
    (a complete entry exists; it is not read, so a corrupt one still counts as present)."""
    catalogue.card(model_name)
    catalogue.check_scale(scale)
    readouts = _check_readouts(model_name, readouts)
    perturbation = _check_perturbation(perturbation)
    resolve_device(device)
    loaded = catalogue.identity(model_name, scale=scale, weights=weights, seed=seed,
                                steps=_check_steps(steps), **(model_options or {}))
    root = store.cache_dir(cache_dir)
    return all(store.entry_paths(root, model_name,
                                 store.key(cache_spec(loaded, probe, readout, perturbation))
                                 )[1].exists()
               for readout in readouts)


def run_model(model: torch.nn.Module, probe: Probe, readouts: Sequence[str], batch_size: int,
              device: torch.device, progress: bool = True, description: str = "",
              images=None) -> dict[str, torch.Tensor]:
    """One batched pass of ``model`` over ``probe``: ``{readout: float32 CPU [T, N, D]}``.

    ``images``: PIL images in probe order to use instead of ``probe.images`` (the perturbed
    pixels of :func:`features`).

    The next batch is preprocessed (by ``PREPROCESS_THREADS`` threads; PIL releases the GIL)
    while the model runs the current one.
    """
    preprocessing = model.card.preprocessing[model.scale]
    source = probe.images if images is None else images
    n = len(probe)
    if len(source) != n:
        raise AnalysisUtilsError(
            f"images must hold one image per probe image ({n}), got {len(source)}."
        )
    starts = list(range(0, n, batch_size))
    pin = device.type == "cuda"

    pixel_workers = ThreadPoolExecutor(max_workers=PREPROCESS_THREADS)

    def prepare(start: int) -> torch.Tensor:
        batch = torch.stack(list(pixel_workers.map(preprocessing,
                                                   source[start:start + batch_size])))
        return batch.pin_memory() if pin else batch

    out: dict[str, torch.Tensor] = {}
    bar = tqdm(total=n, unit="img", desc=description, disable=not progress, leave=False)
    with pixel_workers, ThreadPoolExecutor(max_workers=1) as pool, torch.inference_mode():
        pending = pool.submit(prepare, starts[0])
        for i, start in enumerate(starts):
            batch = pending.result()
            if i + 1 < len(starts):
                pending = pool.submit(prepare, starts[i + 1])
            values = model.readouts(batch.to(device, non_blocking=pin), readouts)
            for readout in readouts:
                value = values[readout]
                if readout not in out:
                    out[readout] = torch.empty((value.shape[0], n, *value.shape[2:]),
                                               dtype=torch.float32)
                out[readout][:, start:start + value.shape[1]] = value.to("cpu", torch.float32)
            bar.update(batch.shape[0])
    bar.close()
    return out


def features_for_models(model_names: Iterable[str], probe: Probe, **kwargs
                        ) -> dict[str, dict[str, torch.Tensor]]:
    """``{model: features dict}`` for several models; arguments as for :func:`features`."""
    names = list(model_names)
    for name in names:
        catalogue.card(name)  # every name is checked before any work
    return {name: features(name, probe, **kwargs)[0] for name in names}
