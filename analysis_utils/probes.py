"""Probe image sets: which images every model sees, in which order, with which labels.

Two probes, one per catalogue scale:

- ``load("tiny")``: the Tiny-ImageNet validation images of the 100 probe categories
  (``sorted(wnids)[::2]`` of the official 200), 50 per category, ordered by category and then by
  file name. Read from the official layout (``tiny-imagenet-200/wnids.txt``, ``words.txt``,
  ``val/val_annotations.txt``, ``val/images/``) inside ``data_dir``, else
  ``$ANALYSIS_UTILS_DATA``, else the user cache, where the official archive is downloaded,
  checked and unpacked on first use (:mod:`analysis_utils.tiny_imagenet`).
- ``load("imagenet", data_dir=...)``: the reference study's probe: its 100 ImageNet-1k
  categories x 50 ILSVRC2012 validation images, exactly the files and order of its manifest
  (shipped in ``analysis_utils/data/``, MIT licence), from a flat ``ILSVRC2012_val_*.JPEG``
  folder or a per-wnid folder layout.

A :class:`Probe` carries the images (decoded on first use, see :class:`ProbeImages`),
``labels`` (0..C-1 in category order), the category ids and names, the file names, a content
hash (file names and bytes) for the feature cache, and for each scale the index of each
category in that scale's classifier output (see :meth:`Probe.class_index`).
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from . import tiny_imagenet
from .errors import AnalysisUtilsError, choice_error
from .weights import cache_root

PROBES = ("tiny", "imagenet")
IMAGES_PER_CATEGORY = 50

DATA_DIR = Path(__file__).resolve().parent / "data"
MANIFEST_PATH = DATA_DIR / "stimulus_set_manifest.csv"
CATEGORY_METADATA_PATH = DATA_DIR / "category_metadata.csv"
IMAGENET_WNIDS_PATH = DATA_DIR / "imagenet1k_wnids.txt"


@dataclass
class Probe:
    """A fixed, ordered set of labelled images and everything needed to describe it."""

    name: str
    images: Sequence[Image.Image]  # RGB images in probe order (a ProbeImages, or a list)
    labels: torch.Tensor  # int64 [N], 0..C-1 in category order
    category_ids: tuple[str, ...]  # wnids, in category order
    category_names: tuple[str, ...]
    file_names: tuple[str, ...]  # in probe order
    file_hashes: tuple[str, ...]  # sha256 of each file's bytes, in probe order
    source: Path  # the folder the images were read from
    class_indices: dict[str, torch.Tensor | None] = field(default_factory=dict)
    class_index_notes: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def n_categories(self) -> int:
        return len(self.category_ids)

    @property
    def images_per_category(self) -> int:
        return len(self) // self.n_categories

    @property
    def content_hash(self) -> str:
        """sha256 over the probe name, and each file's name and content hash, in order."""
        digest = hashlib.sha256(f"probe:{self.name}\n".encode())
        for name, file_hash, label in zip(self.file_names, self.file_hashes, self.labels.tolist()):
            digest.update(f"{label}\t{name}\t{file_hash}\n".encode())
        return digest.hexdigest()

    def describe(self) -> dict:
        """The probe as JSON-able metadata (for caches and notebooks)."""
        return {
            "name": self.name,
            "content_hash": self.content_hash,
            "n_images": len(self),
            "n_categories": self.n_categories,
            "images_per_category": self.images_per_category,
            "source": str(self.source),
        }

    def class_index(self, scale: str) -> torch.Tensor:
        """Index of each category in the classifier output of ``scale`` (int64 [C]).

        ``class_index(scale)[labels]`` gives the logit column of each image's true class, so
        logit accuracy is ``(logits.argmax(-1) == probe.class_index(scale)[probe.labels])``.
        """
        if scale not in self.class_indices:
            raise choice_error("scale", scale, self.class_indices)
        index = self.class_indices[scale]
        if index is None:
            raise AnalysisUtilsError(self.class_index_notes[scale])
        return index

    def first_indices(self, images_per_category: int) -> list[int]:
        """Positions of the first ``images_per_category`` images of every category (probe
        order is category, then file)."""
        return [i for i in range(len(self)) if i % self.images_per_category < images_per_category]

    def subset(self, images_per_category: int) -> Probe:
        """The first ``images_per_category`` images of every category (for quick runs)."""
        k = _check_images_per_category(images_per_category)
        if k > self.images_per_category:
            raise AnalysisUtilsError(
                f"The {self.name!r} probe has {self.images_per_category} images per category, "
                f"so it cannot be cut to {k}; ask for at most {self.images_per_category}."
            )
        keep = self.first_indices(k)
        return Probe(
            name=self.name,
            images=(self.images.select(keep) if isinstance(self.images, ProbeImages)
                    else [self.images[i] for i in keep]),
            labels=self.labels[keep].clone(),
            category_ids=self.category_ids,
            category_names=self.category_names,
            file_names=tuple(self.file_names[i] for i in keep),
            file_hashes=tuple(self.file_hashes[i] for i in keep),
            source=self.source,
            class_indices=dict(self.class_indices),
            class_index_notes=dict(self.class_index_notes),
        )


def load(name: str = "tiny", data_dir: str | os.PathLike | None = None,
         images_per_category: int = IMAGES_PER_CATEGORY) -> Probe:
    """Load the probe ``name`` ("tiny" or "imagenet"), cut to ``images_per_category`` (<= 50)."""
    if name not in PROBES:
        raise choice_error("probe", name, PROBES)
    k = _check_images_per_category(images_per_category)
    if name == "tiny":
        return _load_tiny(_tiny_root(data_dir), k)
    return _load_imagenet(_imagenet_root(data_dir), k)


def _check_images_per_category(k) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= IMAGES_PER_CATEGORY:
        raise AnalysisUtilsError(
            f"images_per_category must be an integer from 1 to {IMAGES_PER_CATEGORY}, got {k!r}."
        )
    return k


# ----------------------------------------------------------------------------- tiny


def tiny_data_home() -> Path:
    """Where Tiny-ImageNet is downloaded and unpacked when no folder is given: ``data/`` in the
    user cache (:func:`analysis_utils.weights.cache_root`)."""
    return cache_root() / "data"


def _tiny_root(data_dir) -> Path:
    """The ``tiny-imagenet-200`` folder to read, with a clear error when there is none."""
    if data_dir is not None:
        where, origin = Path(data_dir).expanduser(), "data_dir"
    elif os.environ.get("ANALYSIS_UTILS_DATA"):
        where, origin = Path(os.environ["ANALYSIS_UTILS_DATA"]).expanduser(), "ANALYSIS_UTILS_DATA"
    else:
        where, origin = tiny_data_home(), None
    if (where / "tiny-imagenet-200").is_dir():
        return where / "tiny-imagenet-200"
    if where.name == "tiny-imagenet-200" and where.is_dir():
        return where
    if origin is None:  # nothing was named: the user cache, filled on first use
        return tiny_imagenet.download(where)
    raise AnalysisUtilsError(
        f"No Tiny-ImageNet folder at {where / 'tiny-imagenet-200'} (from {origin}); run "
        f"'python -m analysis_utils download tiny-imagenet --dest {where}', or unzip the "
        f"official {tiny_imagenet.OFFICIAL_URL} (or the project's val-probe100.tar.gz) there, "
        "or point data_dir / ANALYSIS_UTILS_DATA at the folder that contains tiny-imagenet-200/."
    )


def _read_lines(path: Path, root: Path) -> list[str]:
    if not path.is_file():
        raise AnalysisUtilsError(
            f"{root} is not in the official Tiny-ImageNet layout: {path.relative_to(root)} is "
            "missing; it needs wnids.txt, words.txt, val/val_annotations.txt and val/images/ as "
            "the official tiny-imagenet-200.zip unpacks."
        )
    return [line.rstrip("\r\n") for line in path.read_text().splitlines() if line.strip()]


def _load_tiny(root: Path, k: int) -> Probe:
    wnids = _read_lines(root / "wnids.txt", root)
    words = {}
    for line in _read_lines(root / "words.txt", root):
        wnid, _, text = line.partition("\t")
        words[wnid] = text.strip()
    annotations = _read_lines(root / "val" / "val_annotations.txt", root)
    if not (root / "val" / "images").is_dir():
        _read_lines(root / "val" / "images", root)  # raises the layout error

    categories = sorted(wnids)[::2]
    missing_words = [w for w in categories if w not in words]
    if missing_words:
        raise AnalysisUtilsError(
            f"{root / 'words.txt'} has no name for {missing_words[0]}; use the official words.txt."
        )
    files: dict[str, list[str]] = {wnid: [] for wnid in categories}
    for line in annotations:
        parts = line.split("\t")
        if len(parts) < 2:
            raise AnalysisUtilsError(
                f"{root / 'val' / 'val_annotations.txt'} has the line {line!r}; expected "
                "'<file>\\t<wnid>\\t...' as in the official file."
            )
        if parts[1] in files:
            files[parts[1]].append(parts[0])
    selected = []
    for wnid in categories:
        names = sorted(files[wnid])
        if len(names) < k:
            raise AnalysisUtilsError(
                f"The category {wnid} ({words[wnid]}) has {len(names)} validation images in "
                f"{root}, fewer than the {k} asked; use the complete Tiny-ImageNet val set or ask "
                "for fewer images_per_category."
            )
        selected.extend((wnid, name) for name in names[:k])

    paths = [root / "val" / "images" / name for _, name in selected]
    missing = [path.name for path in paths if not path.is_file()]
    if missing:
        raise AnalysisUtilsError(
            f"{len(missing)} of the {len(paths)} probe images listed in val_annotations.txt are "
            f"missing from {root / 'val' / 'images'} (first: {missing[0]}); unpack the complete "
            "official archive again."
        )
    images, hashes = _hash_and_check(paths)
    index = {wnid: c for c, wnid in enumerate(categories)}
    full_index, full_note = _tiny_full_index(categories)
    return Probe(
        name="tiny",
        images=images,
        labels=torch.tensor([index[wnid] for wnid, _ in selected], dtype=torch.int64),
        category_ids=tuple(categories),
        category_names=tuple(words[w] for w in categories),
        file_names=tuple(name for _, name in selected),
        file_hashes=tuple(hashes),
        source=root,
        class_indices={"mini": torch.arange(len(categories)), "full": full_index},
        class_index_notes={"mini": "", "full": full_note},
    )


def imagenet_wnids() -> list[str] | None:
    """The 1000 ImageNet-1k synsets in sorted order: the class order of every 1k classifier.

    Shipped as ``data/imagenet1k_wnids.txt`` (see ``data/README.md`` for its source and checks).
    """
    if not IMAGENET_WNIDS_PATH.exists():
        return None
    return IMAGENET_WNIDS_PATH.read_text().split()


def _tiny_full_index(categories: list[str]) -> tuple[torch.Tensor | None, str]:
    wnids = imagenet_wnids()
    if wnids is None:
        return None, (
            "Full-scale logit accuracy on the tiny probe is unavailable: it needs the sorted list "
            "of the 1000 ImageNet-1k synsets, which this package does not ship; use the "
            "'imagenet' probe at full scale, or the 'tiny' probe at mini scale."
        )
    position = {wnid: i for i, wnid in enumerate(wnids)}
    absent = [w for w in categories if w not in position]
    if absent:
        return None, (
            f"The tiny probe category {absent[0]} is not an ImageNet-1k class, so full-scale "
            "logit accuracy is unavailable on this probe."
        )
    return torch.tensor([position[w] for w in categories], dtype=torch.int64), ""


# ----------------------------------------------------------------------------- imagenet


def _imagenet_root(data_dir) -> Path:
    if data_dir is None and os.environ.get("ANALYSIS_UTILS_IMAGENET"):
        data_dir = os.environ["ANALYSIS_UTILS_IMAGENET"]
    if data_dir is None:
        raise AnalysisUtilsError(
            "The 'imagenet' probe needs your ILSVRC2012 validation images: pass data_dir=<folder> "
            "(flat ILSVRC2012_val_*.JPEG files or one subfolder per wnid) or set "
            "ANALYSIS_UTILS_IMAGENET."
        )
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise AnalysisUtilsError(
            f"The ImageNet validation folder {root} does not exist; pass data_dir=<folder> with "
            "the ILSVRC2012_val_*.JPEG files (flat or one subfolder per wnid)."
        )
    return root


def reference_manifest() -> list[tuple[str, str]]:
    """The study's manifest rows ``(wnid, filename)``, in its order (5000 rows)."""
    with open(MANIFEST_PATH, newline="") as handle:
        return [(row["WordNet_ID"], row["filename"]) for row in csv.DictReader(handle)]


def reference_categories() -> list[dict]:
    """The study's category table: ``WordNet_ID, number_index, label, clean_label`` per row."""
    with open(CATEGORY_METADATA_PATH, newline="") as handle:
        return list(csv.DictReader(handle))


def _load_imagenet(root: Path, k: int) -> Probe:
    categories = reference_categories()
    order = [row["WordNet_ID"] for row in categories]
    by_category: dict[str, list[str]] = {wnid: [] for wnid in order}
    for wnid, filename in reference_manifest():
        by_category[wnid].append(filename)
    selected = [(wnid, name) for wnid in order for name in by_category[wnid][:k]]

    paths, missing = [], []
    for wnid, name in selected:
        flat, nested = root / name, root / wnid / name
        if flat.is_file():
            paths.append(flat)
        elif nested.is_file():
            paths.append(nested)
        else:
            missing.append(name)
    if missing:
        raise AnalysisUtilsError(
            f"{len(missing)} of the {len(selected)} probe images are missing from {root} (first: "
            f"{missing[0]}); it needs the ILSVRC2012 validation files named in "
            f"{MANIFEST_PATH.name}, flat or in per-wnid subfolders."
        )
    images, hashes = _hash_and_check(paths)
    index = {wnid: c for c, wnid in enumerate(order)}
    return Probe(
        name="imagenet",
        images=images,
        labels=torch.tensor([index[wnid] for wnid, _ in selected], dtype=torch.int64),
        category_ids=tuple(order),
        category_names=tuple(row["clean_label"] for row in categories),
        file_names=tuple(name for _, name in selected),
        file_hashes=tuple(hashes),
        source=root,
        class_indices={
            "mini": None,
            "full": torch.tensor([int(row["number_index"]) for row in categories]),
        },
        class_index_notes={
            "mini": "Logit accuracy of mini models on the 'imagenet' probe is unavailable: the "
                    "mini zoo was trained on the 100 tiny probe categories, not on the study's "
                    "ImageNet categories; use the 'tiny' probe at mini scale.",
            "full": "",
        },
    )


# ----------------------------------------------------------------------------- decoding


class ProbeImages(Sequence):
    """The probe's images in order, each decoded from its file the first time it is read.

    Loading a probe reads every file once (for its sha256) and checks that it opens as an image,
    but decodes no pixels: a chapter whose features are all in the cache never needs them (at
    full scale the 5000 decoded ImageNet images take ~2.8 GB). An image is decoded when first
    indexed and then kept, so several models share one decoding.
    """

    def __init__(self, paths: Sequence[Path]):
        self.paths = tuple(paths)
        self._decoded: dict[int, Image.Image] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        index = range(len(self))[index]  # negative indices; IndexError when out of range
        if index not in self._decoded:
            self._decoded[index] = _decode(self.paths[index])
        return self._decoded[index]

    def select(self, indices: Sequence[int]) -> ProbeImages:
        """The images at ``indices``, sharing what is already decoded."""
        chosen = ProbeImages([self.paths[i] for i in indices])
        chosen._decoded = {new: self._decoded[old] for new, old in enumerate(indices)
                           if old in self._decoded}
        return chosen


_IMAGE_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError)


def _undecodable(path: Path, exc: Exception) -> AnalysisUtilsError:
    return AnalysisUtilsError(
        f"The image {path} cannot be decoded ({exc}); replace it with the official file."
    )


def _decode(path: Path) -> Image.Image:
    """The RGB pixels of one probe file (an error names the file)."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except _IMAGE_ERRORS as exc:
        raise _undecodable(path, exc) from exc


#: the first bytes of the image formats a probe may hold (JPEG, PNG, GIF, BMP, TIFF, WebP)
IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM",
                    b"II*\x00", b"MM\x00*", b"RIFF")


def _hash_and_check(paths: list[Path]) -> tuple[ProbeImages, list[str]]:
    """Read each file once: its sha256, and a check that it starts as an image file does (its
    format's signature; an error names a bad file). The pixels are decoded later, on first
    use, where a file damaged past its first bytes gets the same error naming it."""
    hashes = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise AnalysisUtilsError(
                f"Could not read the image {path} ({exc}); check its permissions."
            ) from exc
        if not data.startswith(IMAGE_SIGNATURES) or (
                data.startswith(b"RIFF") and data[8:12] != b"WEBP"):
            raise _undecodable(path, ValueError("its first bytes are not those of a JPEG, "
                                                "PNG, GIF, BMP, TIFF or WebP file"))
        hashes.append(hashlib.sha256(data).hexdigest())
    return ProbeImages(paths), hashes
