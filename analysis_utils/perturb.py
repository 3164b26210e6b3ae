"""Seeded image perturbations, applied to the probe's pixels before each card's preprocessing.

One rule: uint8 images ``[N, 3, H, W]`` in, uint8 images of the same shape out, determined only
by the perturbation's name, level and seed, each image's id and (for clutter) its label and the
images it may borrow objects from. Nothing here knows about models, so every model sees the
same perturbed pixels and its own preprocessing then brings them to its input size. Every
perturbation is defined relative to the image's size (patch and object sides are fractions of
the side, noise is a fraction of the pixel range), so 64x64 and 256x256 images are perturbed
alike.

The registry (:data:`PERTURBATIONS`, listed by :func:`perturbations`):

- ``occlusion``: level = the fraction of the image area covered (0..1). The image is cut into
  an 8 x 8 grid of patches (1/8 of each side: 8 px at 64, 32 px at 256); patches are taken in a
  random order per image until the covered area is closest to the level (so to within half the
  largest patch), and filled with the ImageNet mean RGB ``(0.485, 0.456, 0.406) x 255`` rounded
  to :data:`MEAN_RGB` = (124, 116, 104): the mean that the ImageNet-normalised preprocessing of
  both scales subtracts (:data:`analysis_utils.preprocess.IMAGENET_MEAN`; the mini scale uses it
  too), so an occluder is ~0 at the input of those models (~ -0.03..-0.19 for B and BL).
- ``clutter``: level = the number of objects pasted (an integer 0..8). An object is the
  centre square crop (background and all: there are no masks) of a uniformly drawn image of
  another category from the pool of sources (see :func:`apply`), resized to a side drawn
  uniformly from 1/4 to 1/2 of the image's short side (bilinear, from a pyramid of 2x2 means so
  the last step shrinks by less than 2) and pasted, fully inside the image, at a uniform
  position; later objects cover earlier ones.
- ``noise``: level = the standard deviation of additive Gaussian noise as a fraction of the
  pixel range 0..255 (0..1; ImageNet-C uses 0.08 to 0.38), one draw per pixel and channel,
  then rounded and clipped to 0..255.
- ``phase``: level = the width of phase noise as a fraction of 180 degrees (0..1; Geirhos et
  al. 2018, "Generalisation in humans and deep neural networks"): every spatial frequency's
  phase is shifted by ``level x`` a uniform random angle in (-180, 180] degrees (the same shift
  for the three channels, none for the mean), keeping the amplitude spectrum; level 1 is a
  fully phase-scrambled image. The result is rounded and clipped to 0..255.

Level 0 returns the input pixels exactly, for every perturbation.

Randomness: each image draws from its own ``torch.Generator``, seeded by the first 63 bits of
``sha256("<name>:<seed>:<image id>")``. The ids are the images' positions unless given
(:func:`perturb_probe` uses a hash of each file name), so a batch, a subset or another order of
the same images gets the same pixels as the full set (for clutter: given the same pool of
sources). The draws of one seed do not depend on the level (common random numbers): a higher
level occludes a superset of the patches, adds the same noise scaled up, shifts the phases by
the same angles scaled up, pastes the same objects plus more.

The feature cache: :meth:`PerturbationSpec.key` is the dict that goes into it. In
``extract.cache_spec`` add ``spec["perturbation"] = perturbation.key()`` when a perturbation is
given and ``not perturbation.is_identity`` (and nothing otherwise, so existing entries keep
their keys and level 0 reads the clean features, which it equals pixel for pixel); the probe's
images for the pass are then ``perturb_probe(perturbation, probe)`` instead of
``probe.images``.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import AnalysisUtilsError, choice_error
from .preprocess import IMAGENET_MEAN

#: the occlusion fill: the ImageNet mean RGB x 255, rounded (124, 116, 104)
MEAN_RGB = tuple(int(round(255 * m)) for m in IMAGENET_MEAN)
#: occlusion patches: the image is an OCCLUSION_GRID x OCCLUSION_GRID grid of patches
OCCLUSION_GRID = 8
#: clutter objects' side, as fractions of the image's short side (drawn uniformly)
CLUTTER_SCALE = (0.25, 0.5)
#: the side of the clutter sources when the images passed to perturb_probe differ in size
CLUTTER_SOURCE_SIDE = 128
#: pixel values per chunk of work (bounds the memory of one call; small chunks stay in cache)
CHUNK_VALUES = 1 << 20


# ----------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Perturbation:
    """One registered perturbation: its function, level range and what the level means."""

    name: str
    function: Callable
    low: float
    high: float
    integer: bool  # the level is a count
    meaning: str  # what the level means, in words
    default_levels: tuple
    version: int = 1  # bump when the pixels for a (level, seed, id) change

    def check_level(self, level) -> float | int:
        """``level`` as a number in this perturbation's range (an int for a count)."""
        what = "an integer" if self.integer else "a number"
        span = f"{what} from {self.low:g} to {self.high:g} ({self.meaning})"
        if isinstance(level, bool) or not isinstance(level, numbers.Real):
            raise AnalysisUtilsError(f"The {self.name} level must be {span}, got {level!r}.")
        value = float(level)
        if not math.isfinite(value) or not self.low <= value <= self.high:
            raise AnalysisUtilsError(f"The {self.name} level must be {span}, got {level!r}.")
        if self.integer:
            if value != int(value):
                raise AnalysisUtilsError(f"The {self.name} level must be {span}, got {level!r}.")
            return int(value)
        return value


PERTURBATIONS: dict[str, Perturbation] = {}


def register(name: str, low: float, high: float, meaning: str, default_levels: tuple,
             integer: bool = False, version: int = 1):
    """Register ``function(images, level, seed, ids, labels, sources)`` under ``name``."""
    def decorate(function):
        PERTURBATIONS[name] = Perturbation(name, function, low, high, integer, meaning,
                                           tuple(default_levels), version)
        return function
    return decorate


def perturbation(name: str) -> Perturbation:
    """The registered perturbation ``name`` (an unknown name lists the known ones)."""
    if name not in PERTURBATIONS:
        raise choice_error("perturbation", name, PERTURBATIONS)
    return PERTURBATIONS[name]


def perturbations() -> list[dict]:
    """One row per perturbation: name, level range, what the level means, default levels."""
    return [{"name": p.name, "levels": f"{p.low:g}..{p.high:g}", "meaning": p.meaning,
             "default_levels": list(p.default_levels)} for p in PERTURBATIONS.values()]


@dataclass(frozen=True)
class PerturbationSpec:
    """A perturbation at one level with one seed; checked on construction.

    ``key()`` is the JSON-able dict for the feature cache (see the module docstring for how
    extract folds it in); ``is_identity`` says the pixels are the input's (level 0).
    """

    name: str
    level: float | int
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "level", perturbation(self.name).check_level(self.level))
        object.__setattr__(self, "seed", _check_seed(self.seed))

    @property
    def is_identity(self) -> bool:
        return self.level == 0

    def key(self) -> dict:
        """``{"name", "level", "seed", "version"}``: everything that changes the pixels."""
        return {"name": self.name, "level": self.level, "seed": self.seed,
                "version": PERTURBATIONS[self.name].version}

    def describe(self) -> str:
        return f"{self.name} {self.level:g} (seed {self.seed})"


def specs(name: str, levels: Sequence, seed: int = 0) -> list[PerturbationSpec]:
    """The specs of a chapter's level grid: ``name`` at each of ``levels`` (checked first)."""
    if isinstance(levels, (str, bytes)) or not isinstance(levels, Sequence) or not levels:
        raise AnalysisUtilsError(
            f"The levels of {name!r} must be a non-empty list of numbers, for example "
            f"{list(perturbation(name).default_levels)}, got {levels!r}."
        )
    return [PerturbationSpec(name, level, seed) for level in levels]


# ----------------------------------------------------------------------------- applying


def apply(spec: PerturbationSpec, images: torch.Tensor, labels: torch.Tensor | None = None,
          ids: Sequence[int] | None = None,
          sources: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """``images`` (uint8 [N, 3, H, W]) perturbed as ``spec`` says: a new uint8 tensor.

    ``labels`` (int [N]) are needed by clutter only. ``ids`` (distinct non-negative ints, one
    per image; default 0..N-1) seed each image's draws. ``sources`` = ``(objects, labels)``:
    the pool clutter borrows from, uint8 [M, 3, S, S] square objects and their labels; by
    default the centre square crops of ``images`` themselves.
    """
    if not isinstance(spec, PerturbationSpec):
        raise AnalysisUtilsError(
            f"spec must be a PerturbationSpec(name, level, seed), got {type(spec).__name__}."
        )
    images = _check_images(images, "images")
    ids = _check_ids(ids, len(images))
    if labels is not None:
        labels = _check_labels(labels, len(images), "labels")
    return PERTURBATIONS[spec.name].function(images, spec.level, spec.seed, ids, labels, sources)


def perturb_probe(spec: PerturbationSpec, probe, positions: Sequence[int] | None = None
                  ) -> list[Image.Image]:
    """The probe's images, perturbed, as RGB PIL images in probe order (what the card's
    preprocessing takes); with ``positions``, only the images at those positions (the same
    pixels as in the whole probe's result: the same ids and the same pool of sources).

    Each image's id is a hash of its file name, so a probe cut to fewer images per category
    gets the same pixels for the images it keeps (for clutter, only when the pool is the same:
    its sources are the probe's own images). Images of one size are perturbed together;
    clutter's sources are the images themselves when they are all one square size, else
    their centre square crops resized to :data:`CLUTTER_SOURCE_SIDE`.
    """
    from .probes import Probe

    if not isinstance(probe, Probe):
        raise AnalysisUtilsError(
            "probe must be a Probe from analysis_utils.probes.load(...), got "
            f"{type(probe).__name__}."
        )
    ids = [file_id(name) for name in probe.file_names]
    wanted = range(len(probe)) if positions is None else list(positions)
    if any(isinstance(i, bool) or not isinstance(i, numbers.Integral) or not 0 <= i < len(probe)
           for i in wanted):
        raise AnalysisUtilsError(
            f"positions must be probe positions from 0 to {len(probe) - 1}, got {positions!r}."
        )
    if spec.is_identity:
        return [probe.images[i] for i in wanted]
    keep = set(wanted)
    needed = range(len(probe)) if spec.name == "clutter" else sorted(keep)  # clutter: the pool
    pixels = {i: pil_to_tensor(probe.images[i]) for i in needed}
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, tensor in pixels.items():
        by_size.setdefault(tuple(tensor.shape[1:]), []).append(i)
    sources = None
    if spec.name == "clutter":
        pool = list(pixels.values())  # every probe image, in probe order
        square = len(by_size) == 1 and next(iter(by_size))[0] == next(iter(by_size))[1]
        if square:
            sources = (torch.stack(pool), probe.labels)
        else:
            side = CLUTTER_SOURCE_SIDE
            crops = [_resize(_centre_square(p[None]), side)[0] for p in pool]
            sources = (torch.stack(crops), probe.labels)
    out: list[Image.Image | None] = [None] * len(probe)
    for members in by_size.values():
        members = [i for i in members if i in keep]
        if not members:
            continue
        batch = torch.stack([pixels[i] for i in members])
        done = apply(spec, batch, probe.labels[members], ids=[ids[i] for i in members],
                     sources=sources)
        for i, tensor in zip(members, done):
            out[i] = tensor_to_pil(tensor)
    return [out[i] for i in wanted]


def file_id(file_name: str) -> int:
    """A stable image id from a file name: the first 8 bytes of its sha256, as an int."""
    return int.from_bytes(hashlib.sha256(file_name.encode()).digest()[:8], "big")


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image as uint8 [3, H, W]."""
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """uint8 [3, H, W] as an RGB PIL image."""
    return Image.fromarray(image.permute(1, 2, 0).contiguous().numpy(), "RGB")


def images_to_tensor(images: Sequence[Image.Image]) -> torch.Tensor:
    """Same-size PIL images (for example ``probe.images``) as uint8 [N, 3, H, W]."""
    tensors = [pil_to_tensor(image) for image in images]
    sizes = sorted({tuple(t.shape[1:]) for t in tensors})
    if len(sizes) > 1:
        raise AnalysisUtilsError(
            f"The images have {len(sizes)} different sizes (for example {sizes[0]} and "
            f"{sizes[-1]}); stack images of one size, or use perturb_probe, which groups them."
        )
    if not tensors:
        raise AnalysisUtilsError("There are no images to stack; pass at least one image.")
    return torch.stack(tensors)


# ----------------------------------------------------------------------------- checks


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise AnalysisUtilsError(f"The perturbation seed must be a non-negative integer, got "
                                 f"{seed!r}.")
    return int(seed)


def _check_images(images, what: str) -> torch.Tensor:
    if (not isinstance(images, torch.Tensor) or images.dtype != torch.uint8
            or images.dim() != 4 or images.shape[1] != 3 or images.shape[0] < 1
            or min(images.shape[2:]) < 1):
        shown = (f"a {images.dtype} tensor of shape {list(images.shape)}"
                 if isinstance(images, torch.Tensor) else type(images).__name__)
        raise AnalysisUtilsError(
            f"{what} must be a uint8 tensor [N, 3, H, W] with N >= 1 (RGB pixels 0..255), got "
            f"{shown}; convert PIL images with perturb.images_to_tensor."
        )
    return images.cpu().contiguous()


def _check_labels(labels, n: int, what: str) -> torch.Tensor:
    if (not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point
            or labels.dtype == torch.bool or labels.shape != (n,)):
        shown = (f"a {labels.dtype} tensor of shape {list(labels.shape)}"
                 if isinstance(labels, torch.Tensor) else type(labels).__name__)
        raise AnalysisUtilsError(
            f"{what} must be an integer tensor [{n}] (one category per image), got {shown}."
        )
    return labels.cpu().to(torch.int64)


def _check_ids(ids, n: int) -> list[int]:
    if ids is None:
        return list(range(n))
    values = list(ids.tolist() if isinstance(ids, torch.Tensor) else ids)
    if (len(values) != n or len(set(values)) != n
            or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0
                   for v in values)):
        raise AnalysisUtilsError(
            f"ids must be {n} distinct non-negative integers (one per image, for its seed), got "
            f"{len(values)} values; pass None for the images' positions."
        )
    return [int(v) for v in values]


def _generators(name: str, seed: int, ids: list[int]):
    """One seeded ``torch.Generator`` per image, seeded by the first 63 bits of
    sha256("<name>:<seed>:<image id>"); yielded one at a time (the same object, reseeded)."""
    generator = torch.Generator()
    for i in ids:
        digest = hashlib.sha256(f"{name}:{seed}:{i}".encode()).digest()
        generator.manual_seed(int.from_bytes(digest[:8], "big") >> 1)
        yield generator


def _chunks(images: torch.Tensor):
    """Slices of at most CHUNK_VALUES pixel values each."""
    step = max(1, CHUNK_VALUES // images[0].numel())
    for start in range(0, len(images), step):
        yield slice(start, start + step)


def _to_uint8(values: torch.Tensor) -> torch.Tensor:
    return values.round_().clamp_(0, 255).to(torch.uint8)


def _centre_square(images: torch.Tensor) -> torch.Tensor:
    """The central min(H, W) square (offsets rounded as preprocess._centre_crop does)."""
    h, w = images.shape[2:]
    side = min(h, w)
    top, left = int(round((h - side) / 2.0)), int(round((w - side) / 2.0))
    return images[:, :, top:top + side, left:left + side]


def _resize(images: torch.Tensor, side: int) -> torch.Tensor:
    """uint8 [n, 3, S, S] -> uint8 [n, 3, side, side] (antialiased bilinear)."""
    if images.shape[-1] == side and images.shape[-2] == side:
        return images.clone()
    resized = F.interpolate(images.float(), size=(side, side), mode="bilinear",
                            align_corners=False, antialias=True)
    return _to_uint8(resized)


# ----------------------------------------------------------------------------- occlusion


@register("occlusion", 0.0, 1.0, "fraction of the image area covered by mean-grey patches",
          default_levels=(0.0, 0.2, 0.4, 0.6, 0.8))
def occlusion(images, level, seed=0, ids=None, labels=None, sources=None) -> torch.Tensor:
    """Cover ``level`` of the area with grid patches (1/8 of each side) of :data:`MEAN_RGB`."""
    level = PERTURBATIONS["occlusion"].check_level(level)
    images = _check_images(images, "images")
    ids = _check_ids(ids, len(images))
    n, _, h, w = images.shape
    g = OCCLUSION_GRID
    row_cell = torch.arange(h) * g // h  # the grid row of each pixel row
    col_cell = torch.arange(w) * g // w
    cell_area = (torch.bincount(row_cell, minlength=g)[:, None]
                 * torch.bincount(col_cell, minlength=g)[None, :]).reshape(-1)
    order = torch.stack([torch.randperm(g * g, generator=r)
                         for r in _generators("occlusion", seed, ids)])  # [n, g*g]
    covered = torch.cat([torch.zeros(n, 1, dtype=torch.int64),
                         cell_area[order].cumsum(1)], dim=1)  # [n, g*g + 1]: after 0.. patches
    count = (covered - level * h * w).abs().argmin(1)  # patches closest to the level (first)
    chosen = torch.zeros(n, g * g, dtype=torch.bool)
    chosen.scatter_(1, order, torch.arange(g * g)[None, :] < count[:, None])
    mask = chosen.view(n, g, g)[:, row_cell][:, :, col_cell]  # [n, h, w]
    fill = torch.tensor(MEAN_RGB, dtype=torch.uint8).view(1, 3, 1, 1)
    return torch.where(mask[:, None], fill, images)


# ----------------------------------------------------------------------------- clutter


@register("clutter", 0, 8, "number of objects from other categories pasted on the image",
          default_levels=(0, 1, 2, 4, 8), integer=True)
def clutter(images, level, seed=0, ids=None, labels=None, sources=None) -> torch.Tensor:
    """Paste ``level`` objects from other categories' images (see the module docstring)."""
    level = PERTURBATIONS["clutter"].check_level(level)
    images = _check_images(images, "images")
    ids = _check_ids(ids, len(images))
    if labels is None:
        raise AnalysisUtilsError(
            "clutter needs the images' labels (to paste only objects of other categories); "
            "pass labels=probe.labels or use perturb_probe."
        )
    labels = _check_labels(labels, len(images), "labels")
    if sources is None:
        pool, pool_labels = _centre_square(images), labels
    else:
        if not isinstance(sources, tuple) or len(sources) != 2:
            raise AnalysisUtilsError(
                "sources must be a tuple (objects uint8 [M, 3, S, S], labels [M]), got "
                f"{type(sources).__name__}."
            )
        pool = _check_images(sources[0], "the clutter sources")
        pool_labels = _check_labels(sources[1], len(pool), "the clutter sources' labels")
        if pool.shape[2] != pool.shape[3]:
            raise AnalysisUtilsError(
                f"The clutter sources must be square objects [M, 3, S, S], got "
                f"{list(pool.shape)}; pass their centre square crops."
            )
    if level == 0:
        return images.clone()
    kinds = labels.unique()  # sorted; a table of the other categories' pool positions
    others = [torch.nonzero(pool_labels != kind).flatten() for kind in kinds.tolist()]
    for kind, positions in zip(kinds.tolist(), others):
        if len(positions) == 0:
            raise AnalysisUtilsError(
                f"clutter found no source image outside category {kind}; the pool of sources "
                "needs images of at least two categories."
            )
    table = torch.nn.utils.rnn.pad_sequence(others, batch_first=True)  # [kinds, most others]
    row = torch.searchsorted(kinds, labels)
    counts = torch.tensor([len(positions) for positions in others])[row]
    n, _, h, w = images.shape
    short = min(h, w)
    draws = torch.stack([torch.rand(level, 4, generator=r, dtype=torch.float64)
                         for r in _generators("clutter", seed, ids)])  # [n, level, 4]
    low, high = CLUTTER_SCALE
    pyramid = _Pyramid(pool)
    pixels = images.permute(0, 2, 3, 1).contiguous()  # [n, h, w, 3]: a pasted row is contiguous
    flat = pixels.view(-1, 3)
    for j in range(level):  # later objects cover earlier ones
        u_source, u_scale, u_top, u_left = draws[:, j].unbind(1)
        source = table[row, (u_source * counts).long().clamp_(max=counts - 1)]
        side = (short * (low + (high - low) * u_scale)).round().long().clamp_(1, short)
        top = (u_top * (h - side + 1)).long().clamp_(max=h - side)
        left = (u_left * (w - side + 1)).long().clamp_(max=w - side)
        for s in side.unique().tolist():
            members = torch.nonzero(side == s).flatten()
            objects = pyramid.resized(source[members], s)  # [m, s, s, 3]
            rows = (members[:, None] * h + top[members, None] + torch.arange(s)) * w  # [m, s]
            cols = left[members, None] + torch.arange(s)
            flat[(rows[:, :, None] + cols[:, None, :]).flatten()] = objects.reshape(-1, 3)
    return pixels.permute(0, 3, 1, 2).contiguous()


class _Pyramid:
    """Clutter sources at halved sides (2x2 means), so each object is resized by bilinear
    interpolation from the level that shrinks it by less than 2 (no aliasing to speak of)."""

    def __init__(self, pool: torch.Tensor):
        self.levels = [pool]

    def resized(self, which: torch.Tensor, side: int) -> torch.Tensor:
        """Sources ``which`` as uint8 [m, side, side, 3]."""
        while self.levels[-1].shape[-1] // 2 >= side:
            last = self.levels[-1]
            halved = [_to_uint8(F.avg_pool2d(last[part].float(), 2)) for part in _chunks(last)]
            self.levels.append(torch.cat(halved))
        level = 0
        while self.levels[level].shape[-1] // 2 >= side:
            level += 1
        chosen = self.levels[level][which]
        if chosen.shape[-1] != side:
            chosen = _to_uint8(F.interpolate(chosen.float(), size=(side, side), mode="bilinear",
                                             align_corners=False))
        return chosen.permute(0, 2, 3, 1)


# ----------------------------------------------------------------------------- noise


@register("noise", 0.0, 1.0, "standard deviation of additive Gaussian noise, as a fraction "
          "of the pixel range 0..255", default_levels=(0.0, 0.05, 0.1, 0.2, 0.4))
def gaussian_noise(images, level, seed=0, ids=None, labels=None, sources=None) -> torch.Tensor:
    """Add Gaussian noise of standard deviation ``level x 255``, round, clip to 0..255."""
    level = PERTURBATIONS["noise"].check_level(level)
    images = _check_images(images, "images")
    ids = _check_ids(ids, len(images))
    out = torch.empty_like(images)
    for part in _chunks(images):
        chunk = images[part]
        noise = torch.empty(chunk.shape, dtype=torch.float32)
        for k, generator in enumerate(_generators("noise", seed, ids[part])):
            torch.randn(chunk.shape[1:], generator=generator, out=noise[k])
        out[part] = _to_uint8(noise.mul_(255.0 * level).add_(chunk))
    return out


# ----------------------------------------------------------------------------- phase noise


@register("phase", 0.0, 1.0, "width of phase noise as a fraction of 180 degrees (1 = fully "
          "phase-scrambled)", default_levels=(0.0, 0.25, 0.5, 0.75, 1.0))
def phase_noise(images, level, seed=0, ids=None, labels=None, sources=None) -> torch.Tensor:
    """Shift each spatial frequency's phase by ``level x`` a uniform random angle (the same
    for the three channels, none for the mean), keep the amplitudes, round, clip."""
    level = PERTURBATIONS["phase"].check_level(level)
    images = _check_images(images, "images")
    ids = _check_ids(ids, len(images))
    out = torch.empty_like(images)
    h, w = images.shape[2:]
    for part in _chunks(images):
        white = torch.empty((len(ids[part]), h, w), dtype=torch.float32)
        for k, generator in enumerate(_generators("phase", seed, ids[part])):
            torch.randn((h, w), generator=generator, out=white[k])
        angle = torch.fft.rfft2(white).angle()  # uniform, Hermitian
        angle[:, 0, 0] = 0.0  # keep the mean
        shift = torch.polar(torch.ones_like(angle), angle * level)[:, None]
        spectrum = torch.fft.rfft2(images[part].float()) * shift
        out[part] = _to_uint8(torch.fft.irfft2(spectrum, s=(h, w)))
    return out
