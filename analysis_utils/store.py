"""The feature cache on disk: one entry per (everything that changes the numbers, readout).

An entry is ``<root>/<model>/<key>.safetensors`` (the tensor ``features``, float32 [T, N, D])
plus ``<key>.json`` beside it (the metadata and the full key spec). ``key`` is the sha256 of
the canonical JSON of the spec, which holds the model name, scale and steps, the weights
(file sha256, or the seed when untrained), the probe's content hash, the preprocessing, the
readout and the model code's version: change any of them and the entry is a different file.

Writes are atomic: each file goes to a temporary name in the same folder and is renamed into
place, tensors first and the JSON last, so an entry counts as complete only once its JSON exists.
Overwriting an entry removes its old JSON before the new tensor file is renamed into place, so
a JSON always describes the tensor file beside it. A process killed at any point of a write
(tests/test_store.py kills one) leaves at most an entry without its JSON, which reads as absent,
and temporary ``.part`` files, which are never read.
An entry that fails to read is reported with a warning and treated as absent (the caller
recomputes and overwrites it). No pickle anywhere.

The root is ``cache_dir`` when given, else ``$ANALYSIS_UTILS_CACHE``, else
``~/.cache/analysis_utils/features``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import torch

from .weights import cache_root

FORMAT_VERSION = 1


def cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache root: the argument, else ``$ANALYSIS_UTILS_CACHE``, else the user cache."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    override = os.environ.get("ANALYSIS_UTILS_CACHE")
    return Path(override).expanduser() if override else cache_root() / "features"


def canonical_json(spec: dict) -> str:
    return json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def key(spec: dict) -> str:
    """The entry key: sha256 of the spec's canonical JSON (key order does not matter)."""
    return hashlib.sha256(canonical_json({"format": FORMAT_VERSION, **spec}).encode()).hexdigest()


def entry_paths(root: Path, model: str, entry_key: str) -> tuple[Path, Path]:
    """``(tensor file, metadata file)`` of an entry."""
    folder = Path(root) / model
    return folder / f"{entry_key}.safetensors", folder / f"{entry_key}.json"


def save(root: str | os.PathLike, model: str, spec: dict, features: torch.Tensor,
         metadata: dict) -> Path:
    """Write one entry atomically; returns the tensor file's path."""
    from safetensors.torch import save_file

    entry_key = key(spec)
    tensor_path, meta_path = entry_paths(Path(root), model, entry_key)
    tensor_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_tensor = _temporary(tensor_path)
    tmp_meta = _temporary(meta_path)
    try:
        save_file({"features": features.detach().to("cpu", torch.float32).contiguous()},
                  str(tmp_tensor))
        record = {"key": entry_key, "spec": spec, "metadata": metadata,
                  "shape": list(features.shape), "bytes": tmp_tensor.stat().st_size}
        tmp_meta.write_text(json.dumps(record, indent=1, sort_keys=True))
        meta_path.unlink(missing_ok=True)  # an old entry is incomplete from here on
        os.replace(tmp_tensor, tensor_path)
        os.replace(tmp_meta, meta_path)  # last: the entry is complete from here on
    finally:
        for tmp in (tmp_tensor, tmp_meta):
            if tmp.exists():
                tmp.unlink()
    return tensor_path


def _temporary(path: Path) -> Path:
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(handle)
    return Path(name)


def load(root: str | os.PathLike, model: str, spec: dict) -> tuple[torch.Tensor, dict] | None:
    """``(features, metadata)`` of a complete, readable entry; ``None`` when there is none.

    An entry that exists but cannot be read (truncated, corrupt, mismatched) gives a warning
    and ``None``, so the caller recomputes it.
    """
    from safetensors.torch import load_file

    entry_key = key(spec)
    tensor_path, meta_path = entry_paths(Path(root), model, entry_key)
    if not meta_path.exists():
        return None
    try:
        record = json.loads(meta_path.read_text())
        if record.get("key") != entry_key or canonical_json(record["spec"]) != canonical_json(spec):
            raise ValueError("its metadata describes a different entry")
        if tensor_path.stat().st_size != record["bytes"]:
            raise ValueError("the tensor file has the wrong size")
        features = load_file(str(tensor_path))["features"]
        if list(features.shape) != record["shape"] or features.dtype != torch.float32:
            raise ValueError("the tensor has the wrong shape or type")
    except Exception as exc:  # any unreadable entry: recompute rather than crash
        warnings.warn(
            f"The cached features {tensor_path} could not be read ({exc}); recomputing them.",
            stacklevel=2,
        )
        return None
    return features, record["metadata"]
