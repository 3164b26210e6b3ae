"""Training the mini zoo: the seven catalogue architectures at mini scale on Tiny-ImageNet-100.

The training images of the 100 probe categories (``sorted(wnids)[::2]`` of the official 200)
are read straight from the ``train-probe100-*.tar.gz`` archives (or from an official
``tiny-imagenet-200/train`` folder) and decoded once into one uint8 tensor in memory. Class
index = position of the wnid in the sorted probe list, the mini classifier index used
everywhere else. Each model is trained with its family's loss timing (from its card):

- ``"both passes"`` (LRM3, LRA3): cross-entropy averaged over the 2 training passes, as the
  official training did; the study (and this book) analyses 3 passes;
- ``"all steps"`` (BL): averaged over every step;
- ``"final step"`` (CORnet-RT, ConvRNN): the last step only;
- ``"single output"`` (AlexNet, B): the one output.

Augmentation (random crop with reflect padding, horizontal flip) and the card's mini
preprocessing run as tensor ops on the device batch. AdamW with warmup and a cosine schedule,
label smoothing, bf16 autocast and channels-last on CUDA; seeded. The number of epochs is fixed
(``epochs``) or chosen from a time budget per model (``budget_seconds``) after measuring the
training throughput on a throwaway copy of the model.

Output: ``<out>/<name>.safetensors`` (the state dict of the catalogue model; float32,
``save_dtype="auto"`` stores float16 where a float32 file would take more than 40 MB / 7) and
``<out>/manifest.json`` (``{"models": {name: {sha256, parameters, config, epochs, ...,
accuracy: {"top1": [per step], "top5": [per step]}}}}``), merged so models can be trained one
by one. :func:`analysis_utils.weights.trained_path` reads that manifest.

Python API: :func:`train_model`, :func:`load_training_data`, :func:`load_validation_data`,
:func:`evaluate`, :func:`training_loss`; command line: :func:`add_arguments` and :func:`main`
(``python -m analysis_utils train --model NAME``).
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import math
import os
import re
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch
import torch.nn.functional as F

from .errors import AnalysisUtilsError
from .weights import ZOO_DIR, file_sha256, trained_dir

#: the seven models of the mini zoo, in the book's order
ZOO_MODELS = ("lrm3", "lra3", "bl", "cornet_rt", "convrnn", "alexnet", "b")
#: the official training of LRM3/LRA3 put the loss on 2 passes; they are analysed with 3
TRAINING_PASSES = 2
IMAGE_SIZE = 64
NUM_CLASSES = 100
TRAIN_ARCHIVE_PATTERN = re.compile(r"^train-probe100-(\d+)\.tar\.gz$")
VAL_ARCHIVE = "val-probe100.tar.gz"
LOSS_TIMINGS = ("both passes", "all steps", "final step", "single output")
SAVE_DTYPES = ("auto", "float32", "float16")
PRECISIONS = ("auto", "float32", "bf16-autocast")
INITS = ("catalogue", "kaiming")
#: the seven zoo files may take 40 MB together; with save_dtype "auto" a model whose float32
#: file would exceed its share is stored in float16 (and loading casts it back to float32)
ZOO_BYTES_PER_MODEL = 40e6 / 7

Log = Callable[[str], None]


# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class TrainConfig:
    """Every setting that changes the trained weights (stored in the manifest)."""

    epochs: int | None = None  # None: choose from budget_seconds
    budget_seconds: float | None = None  # training seconds per model when epochs is None
    max_epochs: int = 100
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.05  # AdamW, decoupled; biases and norm parameters exempt
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_fraction: float = 0.05  # of all iterations, at most one epoch
    label_smoothing: float = 0.1
    grad_clip_norm: float = 5.0
    crop_padding: int = 4  # random 64x64 crop of the reflect-padded image
    horizontal_flip: bool = True
    seed: int = 0
    save_dtype: str = "auto"  # "float32", "float16", or "auto" (see ZOO_BYTES_PER_MODEL)
    limit_per_class: int | None = None  # smoke tests: at most this many training images
    max_classes: int | None = None  # smoke tests: only the first k probe categories
    val_per_class: int | None = None  # smoke tests: at most this many val images per class
    shards: tuple[int, ...] | None = None  # which train-probe100-k archives (None: all found)
    # speed options: they change float rounding during training, not the architecture, the loss
    # timing or what the analysis reads (always the eager float32 model loading the saved file)
    precision: str = "auto"  # "float32", "bf16-autocast", or "auto" (bf16 on CUDA, else float32)
    compile: bool = False  # torch.compile the training forward pass
    channels_last: bool | None = None  # None: on CUDA only
    val_subset_per_class: int = 10  # per-epoch validation on the first k val images per class
    # BatchNorm running statistics recomputed (cumulative average, train-mode forward, no
    # augmentation) on the first k training images per class before every validation and
    # before saving; 0 keeps the statistics accumulated during training (momentum 0.01 lags
    # far behind the weights: BL's val top-1 was 16% with them and 27% recomputed, epoch 3)
    bn_recalibration_per_class: int = 20
    # "catalogue": the catalogue's seeded initialisation; "kaiming": He-normal (fan-in, ReLU)
    # weights and zero biases for every Conv2d and Linear of the feedforward backbone
    init: str = "catalogue"

    def check(self) -> TrainConfig:
        def positive(value, what):
            if value is not None and not (value > 0):
                raise AnalysisUtilsError(f"{what} must be positive, got {value!r}.")

        if self.epochs is None and self.budget_seconds is None:
            raise AnalysisUtilsError(
                "Give either epochs (a fixed number) or budget_seconds (training time per model, "
                "epochs chosen from the measured speed)."
            )
        if self.epochs is not None and (not isinstance(self.epochs, int) or self.epochs < 1):
            raise AnalysisUtilsError(f"epochs must be a positive integer, got {self.epochs!r}.")
        for value, what in [(self.budget_seconds, "budget_seconds"),
                            (self.max_epochs, "max_epochs"), (self.batch_size, "batch_size"),
                            (self.lr, "lr"), (self.limit_per_class, "limit_per_class"),
                            (self.max_classes, "max_classes"),
                            (self.val_per_class, "val_per_class")]:
            positive(value, what)
        if not 0 <= self.label_smoothing < 1:
            raise AnalysisUtilsError(
                f"label_smoothing must lie in [0, 1), got {self.label_smoothing!r}.")
        if self.save_dtype not in SAVE_DTYPES:
            raise AnalysisUtilsError(
                f"save_dtype must be one of {', '.join(SAVE_DTYPES)}, got {self.save_dtype!r}.")
        if self.precision not in PRECISIONS:
            raise AnalysisUtilsError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}.")
        positive(self.val_subset_per_class, "val_subset_per_class")
        if self.init not in INITS:
            raise AnalysisUtilsError(
                f"init must be one of {', '.join(INITS)}, got {self.init!r}.")
        if self.crop_padding < 0:
            raise AnalysisUtilsError(
                f"crop_padding must be 0 or more pixels, got {self.crop_padding!r}.")
        return self


# ----------------------------------------------------------------------------- data


@dataclass
class ImageSet:
    """Decoded images ``[N, 3, 64, 64]`` uint8, labels ``[N]`` int64, and where they came from."""

    images: torch.Tensor
    labels: torch.Tensor
    sources: dict[str, str] = field(default_factory=dict)  # file name -> sha256 ("" for folders)
    wnids: tuple[str, ...] = ()  # the 100 probe wnids; label i is wnids[i]

    def __len__(self) -> int:
        return int(self.labels.numel())


def default_data_dir() -> Path:
    """``$ANALYSIS_UTILS_SHARED/data/tiny-imagenet-200``, else ``../shared/...`` of the repo."""
    shared = os.environ.get("ANALYSIS_UTILS_SHARED")
    base = Path(shared) if shared else Path(__file__).resolve().parents[2] / "shared"
    return base / "data" / "tiny-imagenet-200"


def probe_wnids(all_wnids: Sequence[str]) -> tuple[str, ...]:
    """The 100 probe categories: every other id of the official 200 in sorted order."""
    unique = sorted(set(w.strip() for w in all_wnids if w.strip()))
    if len(unique) != 200:
        raise AnalysisUtilsError(
            f"wnids.txt lists {len(unique)} distinct class ids, not the official 200 of "
            "Tiny-ImageNet; use the wnids.txt of the official archive."
        )
    return tuple(unique[::2])


def _official_folder(data_dir: Path) -> Path | None:
    """The ``tiny-imagenet-200`` folder inside (or at) ``data_dir``, if it has a train folder."""
    for candidate in (data_dir, data_dir / "tiny-imagenet-200"):
        if (candidate / "train").is_dir() and (candidate / "wnids.txt").is_file():
            return candidate
    return None


def _train_archives(data_dir: Path, shards: Sequence[int] | None) -> list[Path]:
    found = {int(m.group(1)): data_dir / name for name in sorted(os.listdir(data_dir))
             if (m := TRAIN_ARCHIVE_PATTERN.match(name))}
    if shards is None:
        return [found[k] for k in sorted(found)]
    missing = [k for k in shards if k not in found]
    if missing:
        raise AnalysisUtilsError(
            f"{data_dir} has no train-probe100-{missing[0]}.tar.gz (it has shards "
            f"{sorted(found) or 'none'}); pick shards that are there or add the archive."
        )
    return [found[k] for k in sorted(set(shards))]


def _check_data_dir(data_dir: str | os.PathLike) -> Path:
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise AnalysisUtilsError(
            f"The data folder {path} does not exist; pass --archives DIR with the "
            "train-probe100-*.tar.gz and val-probe100.tar.gz archives (or an official "
            "tiny-imagenet-200 folder)."
        )
    return path


def _natural_key(name: str) -> tuple:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def _decode(blobs: Sequence[bytes], names: Sequence[str]) -> torch.Tensor:
    """Decode JPEG bytes into one uint8 tensor ``[N, 3, 64, 64]`` (threads; PIL frees the GIL)."""
    from PIL import Image

    out = np.empty((len(blobs), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)

    def one(index: int) -> None:
        try:
            with Image.open(io.BytesIO(blobs[index])) as image:
                array = np.asarray(image.convert("RGB"))
        except Exception as exc:  # PIL raises several types for a broken file
            raise AnalysisUtilsError(
                f"Could not decode the image {names[index]} ({exc}); the archive may be "
                "damaged: check its sha256 against SHA256SUMS."
            ) from exc
        if array.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
            raise AnalysisUtilsError(
                f"The image {names[index]} is {array.shape[1]}x{array.shape[0]}, not the "
                f"{IMAGE_SIZE}x{IMAGE_SIZE} of Tiny-ImageNet; use the official images."
            )
        out[index] = array

    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, range(len(blobs))))
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _read_tar(path: Path, keep: Callable[[str], bool]) -> dict[str, bytes]:
    """``{member name: bytes}`` of the regular files of a tar archive for which ``keep`` holds."""
    try:
        with tarfile.open(path, "r:*") as archive:
            return {member.name: archive.extractfile(member).read() for member in archive
                    if member.isfile() and keep(member.name)}
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise AnalysisUtilsError(
            f"Could not read the archive {path} ({exc}); check it against SHA256SUMS or "
            "download it again."
        ) from exc


def _train_member(name: str) -> tuple[str, str] | None:
    """``(wnid, file name)`` for ``.../train/<wnid>/images/<file>.JPEG``, else None."""
    parts = PurePosixPath(name).parts
    if len(parts) >= 4 and parts[-4] == "train" and parts[-2] == "images" \
            and parts[-1].lower().endswith((".jpeg", ".jpg")):
        return parts[-3], parts[-1]
    return None


def _select(items: list[tuple[int, str, object]], limit_per_class: int | None,
            max_classes: int | None) -> list[tuple[int, str, object]]:
    """Sort ``(label, name, payload)`` by label and natural name; apply the subset limits."""
    items = sorted(items, key=lambda item: (item[0], _natural_key(item[1])))
    if max_classes is not None:
        items = [item for item in items if item[0] < max_classes]
    if limit_per_class is not None:
        counts: dict[int, int] = {}
        kept = []
        for item in items:
            if counts.get(item[0], 0) < limit_per_class:
                counts[item[0]] = counts.get(item[0], 0) + 1
                kept.append(item)
        items = kept
    return items


def _wnids_from_val_archive(path: Path) -> tuple[str, ...]:
    members = _read_tar(path, lambda name: PurePosixPath(name).name == "wnids.txt")
    if not members:
        raise AnalysisUtilsError(
            f"{path} holds no wnids.txt; use the val-probe100.tar.gz of the project's data "
            "folder (it carries the official class list)."
        )
    return probe_wnids(next(iter(members.values())).decode().split())


def _wnids_for(data_dir: Path) -> tuple[str, ...]:
    folder = _official_folder(data_dir)
    if folder is not None:
        return probe_wnids((folder / "wnids.txt").read_text().split())
    if (data_dir / "wnids.txt").is_file():
        return probe_wnids((data_dir / "wnids.txt").read_text().split())
    val = data_dir / VAL_ARCHIVE
    if val.is_file():
        return _wnids_from_val_archive(val)
    raise AnalysisUtilsError(
        f"{data_dir} has neither wnids.txt nor {VAL_ARCHIVE}; the official class list is "
        "needed to number the categories: add one of them."
    )


def _check_complete(items, wnids: Sequence[str], max_classes: int | None, what: str) -> None:
    """Every probe category (or the first ``max_classes``) must have images."""
    wanted = len(wnids) if max_classes is None else min(max_classes, len(wnids))
    present = {label for label, _, _ in items}
    missing = [wnids[k] for k in range(wanted) if k not in present]
    if missing:
        raise AnalysisUtilsError(
            f"{what} lack {len(missing)} of the {wanted} probe categories (first: {missing[0]}); "
            "use complete archives or folders, or --max-classes for a smoke test."
        )


def load_training_data(data_dir: str | os.PathLike | None = None, *,
                       shards: Sequence[int] | None = None,
                       limit_per_class: int | None = None,
                       max_classes: int | None = None) -> ImageSet:
    """The training images of the probe categories, decoded once into memory.

    ``data_dir`` holds ``train-probe100-<k>.tar.gz`` (``shards`` picks some k; default all)
    or is (or contains) an official ``tiny-imagenet-200`` folder with ``train/<wnid>/images``.
    ``limit_per_class`` and ``max_classes`` take a small, deterministic subset (smoke tests).
    """
    data_dir = _check_data_dir(data_dir if data_dir is not None else default_data_dir())
    wnids = _wnids_for(data_dir)
    index = {wnid: i for i, wnid in enumerate(wnids)}
    archives = _train_archives(data_dir, shards)
    items: list[tuple[int, str, object]] = []
    sources: dict[str, str] = {}
    if archives:
        for archive in archives:
            members = _read_tar(archive, lambda name: _train_member(name) is not None)
            for member, blob in members.items():
                wnid, _ = _train_member(member)
                if wnid not in index:
                    raise AnalysisUtilsError(
                        f"{archive.name} holds images of {wnid!r}, which is not one of the 100 "
                        "probe categories (sorted(wnids)[::2]); use the project's archives."
                    )
                items.append((index[wnid], member, blob))
            sources[archive.name] = file_sha256(archive)
    else:
        folder = _official_folder(data_dir)
        if folder is None:
            raise AnalysisUtilsError(
                f"{data_dir} holds no train-probe100-*.tar.gz archives and no "
                "tiny-imagenet-200/train folder; pass --archives DIR pointing to one of them."
            )
        for wnid in wnids[:max_classes]:
            images = folder / "train" / wnid / "images"
            if not images.is_dir():
                continue  # reported below with every other missing category
            for path in images.iterdir():
                if path.suffix.lower() in (".jpeg", ".jpg"):
                    items.append((index[wnid], f"{wnid}/{path.name}", path))
        sources[str(folder / "train")] = ""
    items = _select(items, limit_per_class, max_classes)
    _check_complete(items, wnids, max_classes, f"the training images in {data_dir}")
    blobs = [p.read_bytes() if isinstance(p, Path) else p for _, _, p in items]
    images = _decode(blobs, [name for _, name, _ in items])
    labels = torch.tensor([label for label, _, _ in items], dtype=torch.int64)
    return ImageSet(images, labels, sources, wnids)


def load_validation_data(data_dir: str | os.PathLike | None = None, *,
                         per_class: int | None = None,
                         max_classes: int | None = None) -> ImageSet:
    """The tiny probe: val images of the 100 probe categories (50 each), decoded into memory.

    Reads ``val-probe100.tar.gz`` in ``data_dir`` or an official ``tiny-imagenet-200/val``
    folder (with ``val_annotations.txt``) in or at ``data_dir``. ``per_class`` keeps the first
    images of each class in file-number order (a fixed subset).
    """
    data_dir = _check_data_dir(data_dir if data_dir is not None else default_data_dir())
    archive = data_dir / VAL_ARCHIVE
    folder = next((c for c in (data_dir, data_dir / "tiny-imagenet-200")
                   if (c / "val" / "val_annotations.txt").is_file()), None)
    if archive.is_file():
        members = _read_tar(archive, lambda name: "/val/" in f"/{name}")
        wnids = _wnids_from_val_archive(archive)
        annotations = next((blob for name, blob in members.items()
                            if name.endswith("val_annotations.txt")), None)
        if annotations is None:
            raise AnalysisUtilsError(f"{archive} holds no val/val_annotations.txt; use the "
                                     "project's val-probe100.tar.gz.")
        blobs_by_file = {PurePosixPath(name).name: blob for name, blob in members.items()
                         if "/images/" in name}
        annotation_text = annotations.decode()
        sources = {archive.name: file_sha256(archive)}
    elif folder is not None:
        wnids = probe_wnids((folder / "wnids.txt").read_text().split())
        annotation_text = (folder / "val" / "val_annotations.txt").read_text()
        blobs_by_file = None
        sources = {str(folder / "val"): ""}
    else:
        raise AnalysisUtilsError(
            f"{data_dir} holds neither {VAL_ARCHIVE} nor a tiny-imagenet-200/val folder with "
            "val_annotations.txt; pass --archives DIR pointing to the data folder."
        )
    index = {wnid: i for i, wnid in enumerate(wnids)}
    items = []
    for line in annotation_text.splitlines():
        fields = line.split("\t")
        if len(fields) >= 2 and fields[1] in index:
            items.append((index[fields[1]], fields[0], fields[0]))
    items = _select(items, per_class, max_classes)
    _check_complete(items, wnids, max_classes, f"the val images in {data_dir}")
    blobs = []
    for _, name, _ in items:
        if blobs_by_file is not None:
            if name not in blobs_by_file:
                raise AnalysisUtilsError(f"{archive} lists {name} in val_annotations.txt but "
                                         "lacks the image; the archive is incomplete.")
            blobs.append(blobs_by_file[name])
        else:
            blobs.append((folder / "val" / "images" / name).read_bytes())
    images = _decode(blobs, [name for _, name, _ in items])
    labels = torch.tensor([label for label, _, _ in items], dtype=torch.int64)
    return ImageSet(images, labels, sources, wnids)


# ----------------------------------------------------------------------------- tensor ops


def normalizer(preprocessing) -> Callable[[torch.Tensor], torch.Tensor]:
    """The card's mini preprocessing as a tensor op on uint8 or [0, 1] float batches.

    Tiny-ImageNet images are already 64x64, so the PIL transform reduces to scaling (and the
    ImageNet mean/std, or the [-1, 1] map of B and BL); this applies the same to a batch.
    """
    if preprocessing.size != IMAGE_SIZE or preprocessing.resize not in (None, IMAGE_SIZE):
        raise AnalysisUtilsError(
            f"The mini preprocessing must take {IMAGE_SIZE}x{IMAGE_SIZE} images without resizing, "
            f"got size {preprocessing.size} and resize {preprocessing.resize}; fix the card."
        )
    if preprocessing.recipe == "imagenet":
        mean = torch.tensor(preprocessing.mean).view(1, 3, 1, 1)
        std = torch.tensor(preprocessing.std).view(1, 3, 1, 1)

        def apply(x: torch.Tensor) -> torch.Tensor:
            x = x.float() / 255.0 if x.dtype == torch.uint8 else x
            return (x - mean.to(x.device)) / std.to(x.device)

        return apply
    if preprocessing.recipe == "square_minus1to1":
        def apply(x: torch.Tensor) -> torch.Tensor:
            x = x.float() / 255.0 if x.dtype == torch.uint8 else x
            return x * 2.0 - 1.0

        return apply
    raise AnalysisUtilsError(f"Unknown preprocessing recipe {preprocessing.recipe!r} on the card.")


def augment(batch: torch.Tensor, padding: int, flip: bool,
            generator: torch.Generator) -> torch.Tensor:
    """Random 64x64 crop of the reflect-padded batch and a random horizontal flip, in [0, 1]."""
    x = batch.float() / 255.0
    n, _, height, width = x.shape
    device = x.device
    if padding > 0:
        x = F.pad(x, (padding, padding, padding, padding), mode="reflect")
        dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=device)
        dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=device)
        rows = (dy[:, None] + torch.arange(height, device=device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(width, device=device))[:, None, None, :]
        x = x[torch.arange(n, device=device)[:, None, None, None],
              torch.arange(3, device=device)[None, :, None, None], rows, cols]
    if flip:
        mirror = torch.rand(n, generator=generator, device=device) < 0.5
        x = torch.where(mirror[:, None, None, None], x.flip(3), x)
    return x


def training_steps(card) -> int:
    """How many steps (passes) a model is unrolled for in training."""
    timing = card.loss_timing
    if timing == "both passes":
        return TRAINING_PASSES
    if timing in LOSS_TIMINGS:
        return card.default_steps
    raise AnalysisUtilsError(
        f"The card of {card.name!r} has the loss timing {timing!r}; expected one of "
        f"{', '.join(repr(t) for t in LOSS_TIMINGS)}."
    )


def loss_step_indices(loss_timing: str, n_steps: int) -> list[int]:
    """0-based steps whose logits enter the loss, for a model unrolled ``n_steps`` steps."""
    if loss_timing in ("both passes", "all steps"):
        return list(range(n_steps))
    if loss_timing == "final step":
        return [n_steps - 1]
    if loss_timing == "single output":
        if n_steps != 1:
            raise AnalysisUtilsError(
                f"A 'single output' model must have 1 step, this one has {n_steps}; fix its card."
            )
        return [0]
    raise AnalysisUtilsError(
        f"Unknown loss timing {loss_timing!r}; expected one of "
        f"{', '.join(repr(t) for t in LOSS_TIMINGS)}."
    )


def training_loss(logits: torch.Tensor, labels: torch.Tensor, loss_timing: str,
                  label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy over the steps the loss timing names; ``logits`` is [T, N, C]."""
    steps = loss_step_indices(loss_timing, logits.shape[0])
    per_step = [F.cross_entropy(logits[t].float(), labels, label_smoothing=label_smoothing)
                for t in steps]
    return torch.stack(per_step).mean()


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: ImageSet, preprocessing, *, batch_size: int = 500,
             device: str | torch.device = "cpu", nearest_centroid: bool = False
             ) -> dict[str, list[float]]:
    """Accuracy at every step in [0, 1] of the model as the analysis runs it (eager, float32).

    Returns ``{"top1": [...], "top5": [...]}`` from the logits; with ``nearest_centroid=True``
    also ``"nearest_centroid_top1"``: the study's nearest-centroid top-1 on the penult readout
    (:func:`analysis_utils.geometry.nearest_centroid_accuracy`, prototypes from ``data``).
    """
    from .geometry import nearest_centroid_accuracy

    device = torch.device(device)
    normalise = normalizer(preprocessing)
    was_training = model.training
    model.eval()
    names = ("logits", "penult") if nearest_centroid else ("logits",)
    correct1 = correct5 = None
    penult = []
    for start in range(0, len(data), batch_size):
        x = normalise(data.images[start:start + batch_size].to(device))
        y = data.labels[start:start + batch_size].to(device)
        out = model.readouts(x, names)
        logits = out["logits"]
        top5 = logits.float().topk(min(5, logits.shape[-1]), dim=-1).indices  # [T, N, 5]
        hit1 = (top5[..., 0] == y).sum(dim=1)
        hit5 = (top5 == y[None, :, None]).any(dim=-1).sum(dim=1)
        correct1 = hit1 if correct1 is None else correct1 + hit1
        correct5 = hit5 if correct5 is None else correct5 + hit5
        if nearest_centroid:
            penult.append(out["penult"].float().cpu())
    model.train(was_training)
    n = len(data)
    result = {"top1": [round(c / n, 6) for c in correct1.tolist()],
              "top5": [round(c / n, 6) for c in correct5.tolist()]}
    if nearest_centroid:
        centroid = nearest_centroid_accuracy(torch.cat(penult, dim=1), data.labels)["top1"]
        result["nearest_centroid_top1"] = [round(float(v) / 100, 6)
                                           for v in np.atleast_1d(np.asarray(centroid))]
    return result


def first_per_class(data: ImageSet, per_class: int) -> ImageSet:
    """The first ``per_class`` images of each category in ``data``'s order (a fixed subset)."""
    keep, seen = [], {}
    for i, label in enumerate(data.labels.tolist()):
        if seen.get(label, 0) < per_class:
            seen[label] = seen.get(label, 0) + 1
            keep.append(i)
    index = torch.tensor(keep, dtype=torch.int64)
    return ImageSet(data.images[index], data.labels[index], dict(data.sources), data.wnids)


# ----------------------------------------------------------------------------- training


def _optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)


def _schedule(optimizer, total_steps: int, steps_per_epoch: int, config: TrainConfig):
    warmup = max(1, min(steps_per_epoch, round(config.warmup_fraction * total_steps)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor), warmup


@dataclass(frozen=True)
class SpeedOptions:
    """How the training forward pass runs (resolved for one device); recorded in the manifest."""

    precision: str  # "float32" or "bf16-autocast"
    compile: bool
    channels_last: bool

    @classmethod
    def resolve(cls, config: TrainConfig, device: torch.device) -> SpeedOptions:
        precision = config.precision
        if precision == "auto":
            precision = "bf16-autocast" if device.type == "cuda" else "float32"
        channels_last = (device.type == "cuda" if config.channels_last is None
                         else config.channels_last)
        return cls(precision, bool(config.compile), channels_last)

    def autocast(self, device: torch.device):
        return torch.autocast(device.type, dtype=torch.bfloat16,
                              enabled=self.precision == "bf16-autocast")

    def describe(self) -> str:
        parts = [self.precision]
        if self.compile:
            parts.append("torch.compile")
        if self.channels_last:
            parts.append("channels_last")
        return " + ".join(parts)


class _LogitsForward(torch.nn.Module):
    """The training forward pass as a module (what torch.compile compiles)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.readouts(x, ("logits",))["logits"]


class _Trainer:
    """One model's training loop on a device-resident uint8 training set."""

    def __init__(self, model, card, images, labels, config: TrainConfig, device: torch.device,
                 speed: SpeedOptions | None = None):
        self.model, self.card, self.config, self.device = model, card, config, device
        self.speed = speed or SpeedOptions.resolve(config, device)
        self.images, self.labels = images, labels
        self.normalise = normalizer(card.preprocessing["mini"])
        self.batch_size = min(config.batch_size, len(labels))
        self.steps_per_epoch = len(labels) // self.batch_size
        if self.speed.channels_last:
            self.model.to(memory_format=torch.channels_last)
        forward = _LogitsForward(self.model)
        self.forward = torch.compile(forward) if self.speed.compile else forward

    def step(self, index, generator, optimizer, scheduler=None):
        config = self.config
        x = augment(self.images[index], config.crop_padding, config.horizontal_flip, generator)
        x = self.normalise(x)
        if self.speed.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = self.labels[index]
        with self.speed.autocast(self.device):
            logits = self.forward(x)
        loss = training_loss(logits, y, self.card.loss_timing, config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip_norm)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        correct = (logits[-1].detach().argmax(dim=-1) == y).sum()
        return loss.detach(), correct

    def measure_images_per_second(self, warmup: int = 3, timed: int = 8,
                                  speed: SpeedOptions | None = None) -> float:
        """Training speed on a throwaway copy of the model (the real one is left untouched),
        with this trainer's speed options or with ``speed``."""
        probe = _Trainer(copy.deepcopy(self.model).to(memory_format=torch.contiguous_format),
                         self.card, self.images, self.labels, self.config, self.device,
                         speed or self.speed)
        optimizer = _optimizer(probe.model, self.config)
        generator = torch.Generator(device=self.device).manual_seed(12345)
        n = len(self.labels)
        for i in range(warmup + timed):
            if i == warmup:
                _synchronize(self.device)
                start = time.perf_counter()
            index = torch.randint(0, n, (self.batch_size,), generator=generator,
                                  device=self.device)
            probe.step(index, generator, optimizer)
        _synchronize(self.device)
        return timed * self.batch_size / (time.perf_counter() - start)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu ({torch.get_num_threads()} threads)"


def _resolve_device(device) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AnalysisUtilsError("device 'cuda' was asked for but no CUDA GPU is visible; "
                                 "pass --device cpu or run on a GPU machine.")
    return device


def train_model(name: str, *, archives: str | os.PathLike | None = None,
                out_dir: str | os.PathLike = ZOO_DIR / "mini",
                epochs: int | None = None, budget_seconds: float | None = None,
                device: str | torch.device | None = None,
                train_data: ImageSet | None = None, val_data: ImageSet | None = None,
                log: Log = print, checkpoint_dir: str | os.PathLike | None = None,
                resume: bool = False, progress: bool = False, recipe_note: str = "",
                **settings) -> dict:
    """Train the mini model ``name``, write ``<out_dir>/<name>.safetensors``, merge the manifest.

    ``archives`` is the data folder (see :func:`load_training_data`); ``train_data`` and
    ``val_data`` reuse already decoded images. ``settings`` are further :class:`TrainConfig`
    fields (``lr``, ``batch_size``, ``seed``, ``precision``, ``compile`` ...). At each epoch end
    the model, optimizer, schedule and random state go to ``<checkpoint_dir>/<name>.pt``
    (default ``<out_dir>/checkpoints``); ``resume=True`` continues from there when the file was
    written with the same configuration. ``progress`` shows a tqdm bar per epoch;
    ``recipe_note`` (why this recipe) goes into the manifest. Returns the manifest entry.
    """
    from . import catalogue
    from .models.base import load_state_dict_strict

    card = catalogue.card(name)  # unknown name -> one clear sentence
    unknown = sorted(set(settings) - set(TrainConfig.__dataclass_fields__))
    if unknown:
        raise AnalysisUtilsError(
            f"Unknown training setting {unknown[0]!r}; expected one of: "
            f"{', '.join(TrainConfig.__dataclass_fields__)}.")
    config = TrainConfig(epochs=epochs, budget_seconds=budget_seconds, **settings).check()
    device = _resolve_device(device)
    out_dir = Path(out_dir)
    preprocessing = card.preprocessing["mini"]
    normalizer(preprocessing)  # check the card before any work
    train_steps = training_steps(card)
    loss_steps = loss_step_indices(card.loss_timing, train_steps)
    if train_steps != card.default_steps:
        _check_same_parameters(name, train_steps, card.default_steps)

    if train_data is None:
        train_data = load_training_data(archives, shards=config.shards,
                                        limit_per_class=config.limit_per_class,
                                        max_classes=config.max_classes)
    if val_data is None:
        val_data = load_validation_data(archives, per_class=config.val_per_class,
                                        max_classes=config.max_classes)

    started = time.perf_counter()
    torch.manual_seed(config.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model = catalogue.build(name, scale="mini", steps=train_steps, seed=config.seed).to(device)
    if config.init == "kaiming":
        kaiming_initialise(model)
    model.train()
    speed = SpeedOptions.resolve(config, device)
    trainer = _Trainer(model, card, train_data.images.to(device), train_data.labels.to(device),
                       config, device, speed)
    eager = SpeedOptions("float32", False, False)
    eager_speed = trainer.measure_images_per_second(speed=eager)
    log(f"{name}: eager float32 {eager_speed:,.0f} images/s (batch {trainer.batch_size}, "
        f"{_device_name(device)}); training with {speed.describe()}")

    if config.epochs is not None:
        n_epochs, epochs_rule = config.epochs, "fixed"
    else:
        measured = eager_speed if speed == eager else trainer.measure_images_per_second()
        epoch_seconds = len(train_data) / measured
        n_epochs = max(1, min(config.max_epochs, int(config.budget_seconds // epoch_seconds)))
        epochs_rule = (f"budget {config.budget_seconds:g} s at a measured {measured:,.0f} "
                       f"images/s ({epoch_seconds:.1f} s per epoch), at most {config.max_epochs}")
        log(f"{name}: {measured:,.0f} images/s measured; {n_epochs} epochs fit the budget of "
            f"{config.budget_seconds:g} s")

    optimizer = _optimizer(model, config)
    total_steps = n_epochs * trainer.steps_per_epoch
    scheduler, warmup_steps = _schedule(optimizer, total_steps, trainer.steps_per_epoch, config)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    analysed = catalogue.build(name, scale="mini", seed=config.seed)
    val_subset = first_per_class(val_data, config.val_subset_per_class)
    bn_images = (first_per_class(train_data, config.bn_recalibration_per_class)
                 if config.bn_recalibration_per_class else None)
    checkpoint = Checkpoint(Path(checkpoint_dir) if checkpoint_dir else out_dir / "checkpoints",
                            name, {**asdict(config), "n_epochs": n_epochs})
    history, first_epoch, previous_seconds = [], 1, 0.0
    if resume:
        state = checkpoint.load()
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            generator.set_state(state["generator"])
            history, previous_seconds = state["history"], state["seconds"]
            first_epoch = state["epoch"] + 1
            log(f"{name}: resumed from {checkpoint.path} after epoch {state['epoch']}")
    n_train = trainer.steps_per_epoch * trainer.batch_size
    for epoch in range(first_epoch, n_epochs + 1):
        _synchronize(device)
        epoch_start = time.perf_counter()
        order = torch.randperm(len(train_data), generator=generator, device=device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        bar = _progress_bar(trainer.steps_per_epoch, f"{name} {epoch}/{n_epochs}", progress)
        for i in range(trainer.steps_per_epoch):
            index = order[i * trainer.batch_size:(i + 1) * trainer.batch_size]
            loss, hits = trainer.step(index, generator, optimizer, scheduler)
            loss_sum += loss
            correct += hits
            if bar is not None and (i % 10 == 9 or i == trainer.steps_per_epoch - 1):
                bar.update(i + 1 - bar.n)
        if bar is not None:
            bar.close()
        _synchronize(device)
        seconds = time.perf_counter() - epoch_start
        mean_loss = loss_sum.item() / trainer.steps_per_epoch
        if not math.isfinite(mean_loss):
            raise AnalysisUtilsError(
                f"Training {name} diverged (loss {mean_loss}) in epoch {epoch}; lower the "
                "learning rate (--lr) and train again.")
        load_state_dict_strict(analysed, model.state_dict(), f"the {name} being trained")
        recalibrate_batch_norm(analysed, bn_images, preprocessing, device=device)
        val_start = time.perf_counter()
        val = evaluate(analysed.to(device), val_subset, preprocessing, device=device)
        row = {"epoch": epoch, "loss": round(mean_loss, 5),
               "train_top1": round(correct.item() / n_train, 5),
               "val_top1": val["top1"][-1], "val_top1_per_step": val["top1"],
               "images_per_second": round(n_train / seconds, 1),
               "seconds": round(seconds, 1), "val_seconds": round(time.perf_counter()
                                                                  - val_start, 1)}
        history.append(row)
        log(f"{name} epoch {epoch}/{n_epochs}: loss {mean_loss:.4f}, train top-1 "
            f"{row['train_top1']:.1%} (step {train_steps}), val top-1 {row['val_top1']:.1%} "
            f"({len(val_subset)} images, step {analysed.n_steps}), "
            f"{row['images_per_second']:,.0f} images/s, lr {scheduler.get_last_lr()[0]:.2e}, "
            f"{seconds:.1f} s")
        checkpoint.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "generator": generator.get_state(),
                         "history": history, "epoch": epoch,
                         "seconds": previous_seconds + time.perf_counter() - started})

    # the analysed model: the card's number of steps, the weights exactly as stored (float16
    # rounding included), loaded strictly; the manifest's accuracy is that of the shipped file
    save_dtype = _save_dtype(config.save_dtype, model)
    state = {key: value.detach().cpu().to(save_dtype).float() if value.is_floating_point()
             else value.detach().cpu() for key, value in model.state_dict().items()}
    load_state_dict_strict(analysed, state, f"the trained {name}")
    if recalibrate_batch_norm(analysed, bn_images, preprocessing, device=device):
        round_floats(analysed, save_dtype)  # the evaluated model is exactly the saved file
    per_class = torch.bincount(val_data.labels)
    centroids = bool((per_class[per_class > 0] >= 2).all())
    if not centroids:
        log(f"{name}: no nearest-centroid accuracy (it needs at least 2 val images per "
            "category)")
    accuracy = evaluate(analysed.to(device), val_data, preprocessing, device=device,
                        nearest_centroid=centroids)
    wall_seconds = previous_seconds + time.perf_counter() - started
    path = _save(analysed, out_dir / f"{name}.safetensors", save_dtype)
    entry = {
        "sha256": file_sha256(path),
        "parameters": sum(p.numel() for p in analysed.parameters()),
        "bytes": path.stat().st_size,
        "dtype": str(save_dtype).removeprefix("torch."),
        "config": {
            **{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
            "epochs_rule": epochs_rule,
            "optimizer": "AdamW (no weight decay on biases and norm parameters)",
            "schedule": f"linear warmup {warmup_steps} iterations, then cosine to 0, per "
                        f"iteration, {total_steps} iterations",
            "augmentation": f"random {IMAGE_SIZE}x{IMAGE_SIZE} crop of the image reflect-padded "
                            f"by {config.crop_padding} px; horizontal flip p=0.5"
                            if config.horizontal_flip else "random crop only",
            "preprocessing": preprocessing.spec,
            "loss_timing": card.loss_timing,
            "training_steps": train_steps,
            "loss_steps": [t + 1 for t in loss_steps],
            "analysed_steps": analysed.n_steps,
            "training_note": _training_note(card, train_steps, analysed.n_steps),
            "train_images": len(train_data),
            "val_images": len(val_data),
            "speed_options": speed.describe(),
            "recipe_note": recipe_note,
            "torch": torch.__version__,
            "code_version": card.code_version,
        },
        "epochs": n_epochs,
        "wall_seconds": round(wall_seconds, 2),
        "device": _device_name(device),
        "speed": {"eager_float32_images_per_second": round(eager_speed, 1),
                  "images_per_second": round(sum(r["images_per_second"] for r in history)
                                             / max(1, len(history)), 1),
                  "options": speed.describe(), "batch_size": trainer.batch_size},
        "archives": {**train_data.sources, **val_data.sources},
        "history": history,
        "accuracy": accuracy,
    }
    _merge_manifest(out_dir, name, entry)
    checkpoint.remove()
    steps = ", ".join(f"{card.step_label(t + 1)} {a:.1%}" for t, a in enumerate(accuracy["top1"]))
    log(f"{name}: top-1 on {len(val_data)} val images: {steps}; "
        f"{wall_seconds:.1f} s; wrote {path} ({entry['bytes'] / 1e6:.2f} MB)")
    return entry


@torch.no_grad()
def recalibrate_batch_norm(model: torch.nn.Module, data: ImageSet | None, preprocessing, *,
                           batch_size: int = 100, device: str | torch.device = "cpu") -> bool:
    """Recompute every BatchNorm layer's running mean and variance as the average over the
    batches of ``data`` of their batch statistics (train-mode forward of every step, no
    augmentation; PyTorch's cumulative average); the weights are unchanged.
    Returns False (and changes nothing) when the model has no BatchNorm or ``data`` is None."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms or data is None:
        return False
    device = torch.device(device)
    normalise = normalizer(preprocessing)
    momenta = [norm.momentum for norm in norms]
    was_training = model.training
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative moving average: the mean over all batches
    model.train()
    for start in range(0, len(data), batch_size):
        model.readouts(normalise(data.images[start:start + batch_size].to(device)), ("logits",))
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    model.train(was_training)
    return True


def round_floats(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Round every floating parameter and buffer to ``dtype`` and back (what saving in
    ``dtype`` and loading as float32 does)."""
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.copy_(tensor.to(dtype).float())


def recalibrate_saved_model(name: str, out_dir: str | os.PathLike = ZOO_DIR / "mini", *,
                            archives=None, train_data: ImageSet | None = None,
                            val_data: ImageSet | None = None, per_class: int = 20,
                            log: Log = print) -> dict:
    """Recompute the BatchNorm statistics of an already saved zoo model (trained before the
    trainer did this itself), re-evaluate it on the whole probe, save it and update its
    manifest entry (sha256, bytes, accuracy, ``config.bn_recalibration_per_class``)."""
    from . import catalogue
    from .models.base import load_state_dict_strict

    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    if name not in manifest["models"]:
        raise AnalysisUtilsError(f"{out_dir}/manifest.json has no entry for {name!r}; train it "
                                 "first.")
    entry = dict(manifest["models"][name])
    path = out_dir / f"{name}.safetensors"
    from safetensors.torch import load_file

    model = catalogue.build(name, scale="mini", seed=entry["config"]["seed"])
    load_state_dict_strict(model, {k: v.float() if v.is_floating_point() else v
                                   for k, v in load_file(path).items()}, str(path))
    if train_data is None:
        train_data = load_training_data(archives, shards=entry["config"].get("shards"))
    if val_data is None:
        val_data = load_validation_data(archives)
    preprocessing = catalogue.card(name).preprocessing["mini"]
    if not recalibrate_batch_norm(model, first_per_class(train_data, per_class), preprocessing):
        raise AnalysisUtilsError(f"{name} has no BatchNorm layers; there is nothing to "
                                 "recalibrate.")
    dtype = getattr(torch, entry["dtype"])
    round_floats(model, dtype)
    before = entry["accuracy"]["top1"][-1]
    entry["accuracy"] = evaluate(model, val_data, preprocessing, nearest_centroid=True)
    _save(model, path, dtype)
    entry.update(sha256=file_sha256(path), bytes=path.stat().st_size)
    entry["config"] = {**entry["config"], "bn_recalibration_per_class": per_class,
                       "bn_recalibration_note": "BatchNorm statistics recomputed after training "
                                                "(the history's val top-1 used the statistics "
                                                "accumulated during training)"}
    _merge_manifest(out_dir, name, entry)
    log(f"{name}: BatchNorm statistics recomputed on {per_class} training images per class; "
        f"final-step top-1 {before:.1%} -> {entry['accuracy']['top1'][-1]:.1%}")
    return entry


def kaiming_initialise(model: torch.nn.Module) -> list[str]:
    """He-normal (fan-in, ReLU gain) weights and zero biases for the backbone's Conv2d and
    Linear layers (a feedback model's backbone is its ``feedforward`` module); returns their
    names. Run after the seeded build, so it draws from the same seeded generator."""
    backbone = getattr(model, "feedforward", model)
    prefix = "feedforward." if backbone is not model else ""
    names = []
    for name, module in backbone.named_modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
            names.append(prefix + name)
    return names


class Checkpoint:
    """The epoch-end training state of one model, for ``resume`` (a git-ignored file)."""

    def __init__(self, folder: Path, name: str, config: dict):
        self.path = folder / f"{name}.pt"
        self.config = json.loads(json.dumps(config))  # tuples as lists, as they come back

    def save(self, state: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".part",
                                       dir=self.path.parent)
        os.close(handle)
        try:
            torch.save({**state, "config": self.config}, tmp)
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def load(self) -> dict | None:
        """The saved state, or None when there is none; refuses one of another configuration."""
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise AnalysisUtilsError(
                f"Could not read the training checkpoint {self.path} ({type(exc).__name__}); "
                "delete it to train this model from the start.") from exc
        if state.get("config") != self.config:
            saved = state.get("config") or {}
            differ = sorted(k for k in set(saved) | set(self.config)
                            if saved.get(k) != self.config.get(k))
            raise AnalysisUtilsError(
                f"The checkpoint {self.path} was written with other settings ({', '.join(differ)} "
                "differ); train with the same settings to resume, or delete it to start anew.")
        return state

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _progress_bar(total: int, description: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="batch", ascii=True, mininterval=20,
                file=sys.stderr, leave=False)


def _check_same_parameters(name: str, train_steps: int, analysed_steps: int) -> None:
    """A model trained unrolled for fewer steps must have the same parameters at both."""
    from . import catalogue

    def shapes(steps):
        model = catalogue.build(name, scale="mini", steps=steps)
        return {key: tuple(value.shape) for key, value in model.state_dict().items()}

    if shapes(train_steps) != shapes(analysed_steps):
        raise AnalysisUtilsError(
            f"{name}'s parameters differ between {train_steps} and {analysed_steps} steps, so it "
            f"cannot be trained unrolled for {train_steps} and analysed with {analysed_steps}; "
            "share its parameters across steps or change its card's loss timing."
        )


def _training_note(card, train_steps: int, analysed_steps: int) -> str:
    if card.loss_timing == "both passes":
        return (f"cross-entropy averaged over the {train_steps} training passes, as the official "
                f"training; analysed with {analysed_steps} passes")
    if card.loss_timing == "all steps":
        return f"cross-entropy averaged over all {train_steps} steps"
    if card.loss_timing == "final step":
        return f"cross-entropy on the final step ({card.step_label(train_steps)}) only"
    return "cross-entropy on the single output"


def _save_dtype(choice: str, model: torch.nn.Module) -> torch.dtype:
    if choice == "auto":
        float_bytes = sum(v.numel() * 4 for v in model.state_dict().values()
                          if v.is_floating_point())
        return torch.float16 if float_bytes > ZOO_BYTES_PER_MODEL else torch.float32
    return torch.float16 if choice == "float16" else torch.float32


def _save(model: torch.nn.Module, path: Path, dtype: torch.dtype) -> Path:
    """Write the state dict as safetensors (floating tensors in ``dtype``), atomically."""
    from safetensors.torch import save_file

    state = {key: (value.detach().to("cpu", dtype) if value.is_floating_point()
                   else value.detach().cpu()).contiguous().clone()
             for key, value in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
    os.close(handle)
    try:
        save_file(state, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_manifest(out_dir: str | os.PathLike) -> dict:
    """The manifest in ``out_dir`` (``{"models": {}}`` when there is none yet)."""
    path = Path(out_dir) / "manifest.json"
    if not path.exists():
        return {"models": {}}
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise AnalysisUtilsError(f"{path} is not valid JSON ({exc}); restore it from the "
                                 "repository (git checkout) or delete it to start anew.") from exc
    manifest.setdefault("models", {})
    return manifest


def training_table(manifest: dict) -> list[dict]:
    """One row per trained model of a zoo manifest: how it was trained and how well it does.

    Columns: model, epochs, hours, device, options (speed options used), eager images/s,
    images/s (mean over epochs, with the options), batch size, lr, init, final-step top-1 and
    top-5 and nearest-centroid top-1 (percent, the whole probe), recipe note.
    """
    rows = []
    for name, entry in manifest.get("models", {}).items():
        config, speed, accuracy = entry["config"], entry.get("speed", {}), entry["accuracy"]
        rows.append({
            "model": name, "epochs": entry["epochs"],
            "hours": round(entry["wall_seconds"] / 3600, 2), "device": entry["device"],
            "options": speed.get("options", config.get("speed_options", "")),
            "eager images/s": speed.get("eager_float32_images_per_second"),
            "images/s": speed.get("images_per_second"),
            "batch size": config["batch_size"], "lr": config["lr"],
            "init": config.get("init", "catalogue"),
            "top-1 (%)": round(100 * accuracy["top1"][-1], 2),
            "top-5 (%)": round(100 * accuracy["top5"][-1], 2),
            "NC top-1 (%)": (round(100 * accuracy["nearest_centroid_top1"][-1], 2)
                             if "nearest_centroid_top1" in accuracy else None),
            "recipe": config.get("recipe_note", ""),
        })
    return rows


def learning_curves(manifest: dict) -> list[dict]:
    """The per-epoch history of every model of a zoo manifest, one row per model and epoch:
    model, epoch, loss, train top-1 and validation top-1 at the analysed final step (percent;
    validation on the fixed subset of ``val_subset_per_class`` images per category)."""
    rows = []
    for name, entry in manifest.get("models", {}).items():
        for row in entry.get("history", []):
            rows.append({"model": name, "epoch": row["epoch"], "loss": row["loss"],
                         "train top-1 (%)": round(100 * row["train_top1"], 2),
                         "val top-1 (%)": (round(100 * row["val_top1"], 2)
                                           if "val_top1" in row else None)})
    return rows


def _merge_manifest(out_dir: Path, name: str, entry: dict) -> None:
    """Add one model's entry; a lock file makes parallel training processes merge in turn."""
    import fcntl

    with open(out_dir / ".manifest.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        manifest = read_manifest(out_dir)
        manifest["scale"] = "mini"
        manifest["models"][name] = entry
        manifest["models"] = dict(sorted(manifest["models"].items()))
        handle, tmp = tempfile.mkstemp(prefix="manifest.", suffix=".part", dir=out_dir)
        with os.fdopen(handle, "w") as out:
            json.dump(manifest, out, indent=1)
            out.write("\n")
        os.replace(tmp, out_dir / "manifest.json")


@dataclass(frozen=True)
class Recipe:
    """One model's training settings in a named recipe (:class:`TrainConfig` fields) and why."""

    settings: dict
    why: str


#: The recipe the shipped mini zoo was trained with on a 2-core CPU (``--recipe cpu-zoo``):
#: all four train archives (50,000 images), and per model what differs from TrainConfig's
#: defaults. The speed options (precision, compile) were chosen from images/s measured on that
#: CPU (benchmarks/train_speed.py); the rest from measured learning curves (see the manifest's
#: history and the README).
CPU_ZOO_RECIPE = {
    "b": Recipe({"epochs": 10, "batch_size": 64, "lr": 1e-3},
                "batch-normalised and fast to learn; bf16 and channels_last gave no speed-up on "
                "this CPU, so eager float32"),
    "bl": Recipe({"epochs": 6, "batch_size": 64, "lr": 1e-3, "compile": True,
                  "precision": "bf16-autocast"},
                 "B's optimiser settings; the slowest per image after ConvRNN, so 6 epochs, with "
                 "torch.compile + bf16 autocast (1.3-1.7x its eager speed at 1 thread)"),
    "alexnet": Recipe({"epochs": 24, "batch_size": 64, "lr": 1e-3, "init": "kaiming",
                       "precision": "bf16-autocast", "channels_last": True},
                      "no normalisation layers: He-normal init (19.4% vs 15.8% val top-1 after 4 "
                      "epochs with the catalogue init), batch 64 at lr 1e-3 (lr 2e-3 learned "
                      "slower), 24 epochs (16 gave 34.2% with val top-1 still rising); bf16 + "
                      "channels_last about 1.5x faster on this CPU"),
    "lrm3": Recipe({"epochs": 10, "batch_size": 64, "lr": 1e-3, "init": "kaiming",
                    "channels_last": True},
                   "AlexNet's recipe (same backbone, He-normal on the backbone only) in 10 "
                   "epochs, not 16: this CPU trained it at 82 images/s beside another model, "
                   "so 16 epochs would not have fitted in one session; channels_last about "
                   "1.25x faster on this CPU"),
    "lra3": Recipe({"epochs": 16, "batch_size": 64, "lr": 1e-3, "init": "kaiming",
                    "precision": "bf16-autocast", "channels_last": True},
                   "AlexNet's recipe (same backbone, He-normal on the backbone only; AlexNet "
                   "reached 34.2% in 16 epochs); bf16 + channels_last about 1.3x faster"),
    "cornet_rt": Recipe({"epochs": 12, "batch_size": 64, "lr": 1e-3,
                         "precision": "bf16-autocast"},
                        "the loss on the final step alone learns slowly at first: batch 64 gives "
                        "4x the updates per epoch of batch 256; bf16 autocast about 1.8x faster"),
    "convrnn": Recipe({"epochs": 8, "batch_size": 64, "lr": 1e-3, "channels_last": True},
                      "the slowest per image (17 steps), so 8 epochs; channels_last (72 vs 67 "
                      "images/s eager at 1 thread); torch.compile did not finish compiling in "
                      "more than 4 minutes on this CPU"),
}
RECIPES = {"cpu-zoo": CPU_ZOO_RECIPE}


def cpu_has_native_bf16(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> bool | None:
    """Whether this CPU computes bf16 natively (the ``avx512_bf16`` or ``amx_bf16`` flag of
    ``/proc/cpuinfo``); None where that file cannot be read (not Linux)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


def recipe_settings(recipe: str | None, name: str, device: str = "cpu",
                    native_bf16: bool | None = None) -> tuple[dict, str]:
    """The settings and the reason of ``name`` in ``recipe`` (``({}, "")`` for no recipe).

    The recipe's bf16 autocast was measured on a CPU with native bf16 (AVX-512 BF16). On a CPU
    without it (``native_bf16`` False; by default read by :func:`cpu_has_native_bf16`) the
    same models trained about 10x slower with it, so there the settings train in float32 and
    the reason says so (the log and the manifest record what was used).
    """
    if recipe is None:
        return {}, ""
    if recipe not in RECIPES:
        raise AnalysisUtilsError(f"Unknown recipe {recipe!r}; expected one of: "
                                 f"{', '.join(RECIPES)}.")
    if name not in RECIPES[recipe]:
        raise AnalysisUtilsError(
            f"The recipe {recipe!r} has no settings for {name!r} (it covers "
            f"{', '.join(RECIPES[recipe])}); train it without --recipe and give its settings.")
    entry = RECIPES[recipe][name]
    settings, why = dict(entry.settings), f"recipe {recipe}: {entry.why}"
    on_cpu = str(device).startswith("cpu") or (str(device) == "auto"
                                                and not torch.cuda.is_available())
    if on_cpu and settings.get("precision") == "bf16-autocast":
        if native_bf16 is None:
            native_bf16 = cpu_has_native_bf16()
        if native_bf16 is False:
            settings["precision"] = "float32"
            why += ("; trained in float32, not bf16 autocast: this CPU has no native bf16 "
                    "(no avx512_bf16 flag), where bf16 autocast ran about 10x slower")
    return settings, why


def train_models(names: Sequence[str], *, archives=None, out_dir=ZOO_DIR / "mini",
                 skip_existing: bool = False, log: Log = print, recipe: str | None = None,
                 **kwargs) -> dict[str, dict]:
    """Train several models on data decoded once; returns ``{name: manifest entry}``.

    With ``recipe`` each model starts from its settings there; ``kwargs`` override them.
    """
    from . import catalogue

    device = kwargs.get("device", "cpu")
    for name in names:
        catalogue.card(name)  # every name is checked before any work
        recipe_settings(recipe, name, device)
    run_options = ("device", "checkpoint_dir", "resume", "progress")
    per_model = {}
    for name in names:
        settings, why = recipe_settings(recipe, name, device)
        settings.update(kwargs)
        config_fields = {k: v for k, v in settings.items() if k in TrainConfig.__dataclass_fields__
                         or k == "budget_seconds"}
        unknown = sorted(set(settings) - set(config_fields) - set(run_options))
        if unknown:
            raise AnalysisUtilsError(
                f"Unknown training setting {unknown[0]!r}; expected one of: "
                f"{', '.join(TrainConfig.__dataclass_fields__)}.")
        TrainConfig(**config_fields).check()
        per_model[name] = (settings, why)
    config = TrainConfig(**{k: v for k, v in per_model[names[0]][0].items()
                            if k in TrainConfig.__dataclass_fields__}).check()
    done = read_manifest(out_dir)["models"] if skip_existing else {}
    todo = [n for n in names if not (n in done and (Path(out_dir) / f"{n}.safetensors").exists())]
    for name in names:
        if name not in todo:
            log(f"{name}: already in {out_dir}/manifest.json, skipped (--skip-existing)")
    if not todo:
        return {}
    start = time.perf_counter()
    train_data = load_training_data(archives, shards=config.shards,
                                    limit_per_class=config.limit_per_class,
                                    max_classes=config.max_classes)
    val_data = load_validation_data(archives, per_class=config.val_per_class,
                                    max_classes=config.max_classes)
    log(f"decoded {len(train_data)} training images from {', '.join(train_data.sources)} and "
        f"{len(val_data)} val images in {time.perf_counter() - start:.1f} s")
    results = {}
    for name in todo:
        settings, why = per_model[name]
        results[name] = train_model(name, archives=archives, out_dir=out_dir,
                                    train_data=train_data, val_data=val_data, log=log,
                                    recipe_note=why, **settings)
    for name, entry in results.items():  # a compact summary at the end of the log
        top1 = " ".join(f"{a:.3f}" for a in entry["accuracy"]["top1"])
        speed = max(row["images_per_second"] for row in entry["history"])
        log(f"summary {name}: {entry['epochs']} epochs, {entry['wall_seconds']:.0f} s, "
            f"{speed:,.0f} images/s, {entry['dtype']}, top-1 per step [{top1}]")
    total = sum(e["bytes"] for e in read_manifest(out_dir)["models"].values())
    log(f"all models in {out_dir}: {total / 1e6:.2f} MB in total; this run took "
        f"{time.perf_counter() - start:.0f} s")
    if total > 40e6:
        log(f"warning: the files in {out_dir} take {total / 1e6:.1f} MB, more than the zoo's "
            "40 MB; train again with --save-dtype float16")
    return results


# ----------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``train`` subcommand's options to ``parser``."""
    parser.add_argument("--model", required=True,
                        help="a catalogue name, or 'all' for the seven zoo models")
    parser.add_argument("--plugins", default=None,
                        help="comma-separated modules that register your own models (see "
                             "analysis_utils.plugins), e.g. examples.conv_gru")
    parser.add_argument("--archives", default=None,
                        help="folder with train-probe100-*.tar.gz and val-probe100.tar.gz, or an "
                             "official tiny-imagenet-200 folder (default: "
                             "$ANALYSIS_UTILS_SHARED/data/tiny-imagenet-200 or "
                             "../shared/data/tiny-imagenet-200)")
    parser.add_argument("--out", default=None,
                        help="output folder for <name>.safetensors and manifest.json "
                             "(default: the plug-in's trained_dir where it registered one, "
                             "else the package's zoo/mini)")
    parser.add_argument("--epochs", type=int, default=None, help="a fixed number of epochs")
    parser.add_argument("--budget", type=float, default=None,
                        help="training seconds per model; epochs chosen from the measured speed "
                             "(used when --epochs is not given)")
    parser.add_argument("--recipe", default=None, choices=sorted(RECIPES),
                        help="start each model from its settings in this recipe ('cpu-zoo': how "
                             "the shipped zoo was trained); the options below override them")
    parser.add_argument("--max-epochs", type=int, default=None,
                        help=f"default {TrainConfig.max_epochs}")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"default {TrainConfig.batch_size}")
    parser.add_argument("--lr", type=float, default=None, help=f"default {TrainConfig.lr}")
    parser.add_argument("--weight-decay", type=float, default=None,
                        help=f"default {TrainConfig.weight_decay}")
    parser.add_argument("--seed", type=int, default=None, help=f"default {TrainConfig.seed}")
    parser.add_argument("--precision", default=None, choices=PRECISIONS,
                        help="'auto' (default): bf16 autocast on CUDA, float32 on CPU")
    parser.add_argument("--compile", default=None, action=argparse.BooleanOptionalAction,
                        help="torch.compile the training forward pass (default: no)")
    parser.add_argument("--init", default=None, choices=INITS,
                        help="'catalogue' (default): the seeded catalogue initialisation; "
                             "'kaiming': He-normal backbone weights")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads on CPU (default: torch's choice)")
    parser.add_argument("--device", default="auto", help="'cuda', 'cpu' or 'auto' (default)")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted model from its last epoch-end checkpoint")
    parser.add_argument("--checkpoints", default=None,
                        help="folder of the epoch-end checkpoints (default: <out>/checkpoints)")
    parser.add_argument("--progress", default=True, action=argparse.BooleanOptionalAction,
                        help="a progress bar with the remaining time per epoch (default: on)")
    parser.add_argument("--shards", default=None,
                        help="comma-separated train archive numbers to use, e.g. 0,1,2 "
                             "(default: every train-probe100-*.tar.gz found)")
    parser.add_argument("--limit-per-class", type=int, default=None,
                        help="smoke tests: at most this many training images per category")
    parser.add_argument("--max-classes", type=int, default=None,
                        help="smoke tests: only the first k probe categories")
    parser.add_argument("--val-per-class", type=int, default=None,
                        help="smoke tests: at most this many val images per category")
    parser.add_argument("--save-dtype", default=TrainConfig.save_dtype, choices=SAVE_DTYPES,
                        help="'auto' (default) stores a model in float16 when its float32 file "
                             "would exceed 40 MB / 7; loading casts back to float32")
    parser.add_argument("--skip-existing", action="store_true",
                        help="skip models already in the output manifest (to resume a run)")
    parser.add_argument("--log", default=None,
                        help="also append the log lines to this file (default: <out>/train.log)")
    return parser


def default_out_dir(names) -> Path:
    """Where ``train`` writes without ``--out``: the models' :func:`weights.trained_dir` (a
    plug-in's own folder, else the package's mini zoo), which must be one folder for all."""
    folders = {trained_dir(name, "mini") for name in names}
    if len(folders) > 1:
        raise AnalysisUtilsError(
            f"{', '.join(names)} keep their trained weights in different folders; train them "
            "one at a time, or give one folder with --out.")
    return folders.pop() if folders else ZOO_DIR / "mini"


def main(args: argparse.Namespace) -> int:
    """Run the ``train`` subcommand; returns the exit status."""
    from . import catalogue
    from .plugins import load_plugins

    load_plugins(args.plugins)

    if args.model == "all":
        missing = [n for n in ZOO_MODELS if n not in catalogue.names()]
        if missing:
            raise AnalysisUtilsError(
                f"'all' needs the seven zoo models, but {', '.join(missing)} are not in the "
                "catalogue yet; train the registered ones by name.")
        names = list(ZOO_MODELS)
    else:
        names = [n.strip() for n in args.model.split(",") if n.strip()]
    for name in names:
        catalogue.card(name)  # an unknown name fails before anything is written
    shards = None
    if args.shards:
        try:
            shards = tuple(int(k) for k in args.shards.split(","))
        except ValueError as exc:
            raise AnalysisUtilsError(f"--shards must be comma-separated integers such as 0,1,2, "
                                     f"got {args.shards!r}.") from exc
    out_dir = Path(args.out) if args.out else default_out_dir(names)
    log_path = Path(args.log) if args.log else out_dir / "train.log"

    def log(line: str) -> None:
        stamped = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}"
        print(stamped, flush=True)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") as handle:
            handle.write(stamped + "\n")

    if args.epochs is None and args.budget is None and args.recipe is None:
        raise AnalysisUtilsError("Give --epochs N (fixed), --budget SECONDS (per model) or "
                                 "--recipe NAME.")
    if args.threads is not None:
        if args.threads < 1:
            raise AnalysisUtilsError(f"--threads must be 1 or more, got {args.threads}.")
        torch.set_num_threads(args.threads)
    log("train " + " ".join(f"--{key.replace('_', '-')} {value}" for key, value in
                            vars(args).items() if value not in (None, False)))
    given = {"epochs": args.epochs, "budget_seconds": args.budget,
             "max_epochs": args.max_epochs, "batch_size": args.batch_size, "lr": args.lr,
             "weight_decay": args.weight_decay, "seed": args.seed, "shards": shards,
             "limit_per_class": args.limit_per_class, "max_classes": args.max_classes,
             "val_per_class": args.val_per_class, "save_dtype": args.save_dtype,
             "precision": args.precision, "compile": args.compile, "init": args.init}
    train_models(names, archives=args.archives, out_dir=out_dir,
                 skip_existing=args.skip_existing, log=log, recipe=args.recipe,
                 device=args.device, resume=args.resume, progress=args.progress,
                 checkpoint_dir=args.checkpoints,
                 **{key: value for key, value in given.items() if value is not None})
    return 0


if __name__ == "__main__":  # python -m analysis_utils.train (the package CLI is the usual way)
    _parser = add_arguments(argparse.ArgumentParser(prog="analysis_utils.train",
                                                    description=__doc__.splitlines()[0]))
    try:
        sys.exit(main(_parser.parse_args()))
    except AnalysisUtilsError as _error:
        sys.exit(f"error: {_error}")
