"""Weight files: official checkpoints (URL, sha256, download, cache) and the mini zoo.

- :class:`OfficialWeights` describes one published file: where it lives, the hash it must have
  (a full sha256 or torch.hub's prefix convention), its format and how to convert it. The
  family module that owns the architecture owns the conversion.
- :func:`fetch` downloads into the weights cache (``$ANALYSIS_UTILS_WEIGHTS`` or
  ``~/.cache/analysis_utils/weights``), writing to a temporary file and renaming only after the
  hash matches, so the cache never holds a partial or wrong file.
- The mini zoo lives in ``analysis_utils/zoo/mini/`` (``<name>.safetensors`` plus
  ``manifest.json`` with each file's sha256); a plug-in may keep its own trained weights in
  the same layout in the ``trained_dir`` it registered. :func:`trained_path` finds and checks
  a file, :func:`trained_records` gathers the training records.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .errors import AnalysisUtilsError

ZOO_DIR = Path(__file__).resolve().parent / "zoo"


@dataclass(frozen=True)
class OfficialWeights:
    """One published checkpoint: URL, expected hash and file format."""

    url: str
    sha256: str  # full hex digest, or a prefix (torch.hub's ``-<prefix>.pth`` convention)
    file_format: str  # "torch", "keras_h5", "tf_checkpoint"
    source: str = ""  # who publishes it, for the model card
    filename: str | None = None  # cache file name; defaults to the URL's basename
    extra_files: tuple[tuple[str, str, str], ...] = ()  # (url, sha256, filename) companions

    @property
    def cache_name(self) -> str:
        return self.filename or self.url.rstrip("/").split("/")[-1]


def cache_root() -> Path:
    """The user cache root: ``$XDG_CACHE_HOME/analysis_utils`` or ``~/.cache/analysis_utils``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "analysis_utils"


def weights_cache_dir() -> Path:
    """Where official checkpoints are cached (``$ANALYSIS_UTILS_WEIGHTS`` overrides)."""
    override = os.environ.get("ANALYSIS_UTILS_WEIGHTS")
    return Path(override) if override else cache_root() / "weights"


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The sha256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def hash_matches(actual: str, expected: str) -> bool:
    """True when ``actual`` equals ``expected`` or starts with it (hash-prefix convention)."""
    return bool(expected) and actual.lower().startswith(expected.lower())


def download(url: str, expected_sha256: str, destination: Path) -> Path:
    """Download ``url`` to ``destination`` atomically, refusing a file whose hash differs."""
    destination = Path(destination)
    if destination.exists():
        actual = file_sha256(destination)
        if hash_matches(actual, expected_sha256):
            return destination
        raise AnalysisUtilsError(
            f"The cached file {destination} has sha256 {actual[:16]}..., not the expected "
            f"{expected_sha256[:16]}...; delete it and run again to download a fresh copy."
        )
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=destination.name + ".", suffix=".part",
                                        dir=destination.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(handle, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=60) as response:
                    while block := response.read(1 << 20):
                        out.write(block)
            except (urllib.error.URLError, OSError) as exc:
                raise AnalysisUtilsError(
                    f"Could not download {url} ({exc}); check the network connection, or "
                    f"download the file by hand and place it at {destination}."
                ) from exc
        actual = file_sha256(tmp)
        if not hash_matches(actual, expected_sha256):
            raise AnalysisUtilsError(
                f"The file downloaded from {url} has sha256 {actual[:16]}..., not the expected "
                f"{expected_sha256[:16]}...; the server may serve a different file, so nothing "
                "was cached; report this or pass weights=<path> to a file you trust."
            )
        os.replace(tmp, destination)
    finally:
        if tmp.exists():
            tmp.unlink()
    return destination


def fetch(spec: OfficialWeights, cache_dir: str | os.PathLike | None = None) -> Path:
    """The local path of an official checkpoint, downloading and checking it when needed.

    Companion files (for example a TF checkpoint's ``.index``) are fetched beside it; the
    returned path is the main file. A spec with no recorded sha256 is refused before any
    download: an unchecked file is never used.
    """
    if not spec.sha256:
        raise AnalysisUtilsError(
            f"No sha256 is recorded for {spec.url} ({spec.source or 'official weights'}), so a "
            "download could not be checked and none is made; download the file yourself, verify "
            "it, and pass weights=<path to the file>."
        )
    root = Path(cache_dir) if cache_dir else weights_cache_dir()
    for url, sha, name in spec.extra_files:
        download(url, sha, root / name)
    return download(spec.url, spec.sha256, root / spec.cache_name)


# ----------------------------------------------------------------------------- mini zoo


def trained_dir(name: str, scale: str = "mini") -> Path:
    """The folder that holds the trained ``scale`` weights of ``name``: the plug-in's own
    ``trained_dir`` where its registration gave one, else the package's zoo folder."""
    from .catalogue import card  # the catalogue imports this module

    own = card(name).trained_dir
    return Path(own) if own is not None else ZOO_DIR / scale


def zoo_manifest(scale: str = "mini", directory: str | os.PathLike | None = None) -> dict:
    """The zoo manifest for ``scale`` in ``directory`` (default: the package's zoo folder);
    ``{}`` when no model has been trained there yet."""
    path = (Path(directory) if directory is not None else ZOO_DIR / scale) / "manifest.json"
    if not path.exists():
        return {}
    with open(path) as handle:
        return json.load(handle)


def trained_records(names, scale: str = "mini") -> dict:
    """The training records of the trained models among ``names``, each read from its own
    folder (:func:`trained_dir`: the zoo, or a plug-in's), as one manifest ``{"scale": ...,
    "models": {name: entry}}`` in the order of ``names``; models without weights are left out."""
    manifests: dict[Path, dict] = {}  # each folder's manifest, read once
    models = {}
    for name in names:
        folder = trained_dir(name, scale)
        if folder not in manifests:
            manifests[folder] = zoo_manifest(scale, folder).get("models", {})
        if name in manifests[folder]:
            models[name] = manifests[folder][name]
    return {"scale": scale, "models": models}


def trained_path(name: str, scale: str = "mini") -> Path:
    """The checked path of the trained zoo file for ``name`` (in :func:`trained_dir`).

    Raises a clear error when the zoo has no file for the model or the file's sha256 differs
    from the manifest.
    """
    return checked_trained_file(name, scale)[0]


def checked_trained_file(name: str, scale: str = "mini") -> tuple[Path, str]:
    """``(path, sha256)`` of the trained zoo file for ``name``, read once and checked against
    the manifest (the errors of :func:`trained_path`)."""
    folder = trained_dir(name, scale)
    manifest = zoo_manifest(scale, folder)
    entry = manifest.get("models", {}).get(name)
    path = folder / f"{name}.safetensors"
    if entry is None or not path.exists():
        raise AnalysisUtilsError(
            f"No trained {scale} weights for {name!r} are in {folder}; train them with "
            f"'python -m analysis_utils train --model {name}', or pass weights='untrained' "
            "(random, seeded) to run without them."
        )
    actual = file_sha256(path)
    if actual != entry["sha256"]:
        raise AnalysisUtilsError(
            f"{path} has sha256 {actual[:16]}... but the zoo manifest expects "
            f"{entry['sha256'][:16]}...; restore the file from the repository (git checkout) "
            "or retrain it."
        )
    return path, actual
