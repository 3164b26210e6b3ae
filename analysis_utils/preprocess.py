"""Image transforms named on the model cards (PIL image -> float32 tensor [3, H, W]).

A :class:`Preprocessing` carries its own description (``spec``), so the feature cache can key on
exactly what was done to the pixels. Three recipes cover every model:

- ``imagenet``: resize the short side, centre crop, scale to [0, 1], ImageNet mean/std
  (AlexNet, LRM3, LRA3, CORnet-RT, ConvRNN at full scale: resize 256, crop 224);
- ``square_minus1to1``: centre square crop to ``min(w, h)``, resize to a square, scale to
  [-1, 1] with no mean/std (B and BL, 128 px at full scale);
- the mini scale uses the same two recipes at 64 px with no resize margin (Tiny-ImageNet
  images are already 64x64).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """A named, parameterised transform from a PIL image to a normalised tensor."""

    recipe: str
    size: int
    resize: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    interpolation: str = "bilinear"
    notes: str = field(default="", compare=False)

    @property
    def spec(self) -> dict:
        """Everything that changes the pixels, as plain JSON-able values (for cache keys)."""
        return {
            "recipe": self.recipe,
            "size": self.size,
            "resize": self.resize,
            "mean": list(self.mean) if self.mean else None,
            "std": list(self.std) if self.std else None,
            "interpolation": self.interpolation,
        }

    def describe(self) -> str:
        """One line for the model card."""
        if self.recipe == "imagenet":
            head = f"resize {self.resize}, " if self.resize else ""
            return f"{head}centre crop {self.size}, [0,1], ImageNet mean/std"
        return f"centre square crop, resize {self.size}, scaled to [-1,1]"

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = image.convert("RGB")
        if self.recipe == "imagenet":
            if self.resize is not None:
                image = _resize_short_side(image, self.resize, self.interpolation)
            elif min(image.size) != self.size:
                image = _resize_short_side(image, self.size, self.interpolation)
            tensor = _to_tensor(_centre_crop(image, self.size))
            mean = torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1)
            std = torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1)
            return (tensor - mean) / std
        if self.recipe == "square_minus1to1":
            image = _centre_crop(image, min(image.size))
            if image.size != (self.size, self.size):
                image = image.resize((self.size, self.size), _PIL_FILTERS[self.interpolation])
            return _to_tensor(image) * 2.0 - 1.0
        raise ValueError(f"Unknown preprocessing recipe {self.recipe!r}.")


_PIL_FILTERS = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
                "lanczos": Image.LANCZOS, "box": Image.BOX, "hamming": Image.HAMMING}


def _resize_short_side(image: Image.Image, size: int, interpolation: str) -> Image.Image:
    """Resize so the short side is ``size`` (the long side truncated, as torchvision)."""
    width, height = image.size
    short, long = min(width, height), max(width, height)
    new_short, new_long = size, int(size * long / short)
    new_size = (new_short, new_long) if width <= height else (new_long, new_short)
    if new_size == image.size:
        return image
    return image.resize(new_size, _PIL_FILTERS[interpolation])


def _centre_crop(image: Image.Image, size: int) -> Image.Image:
    """The central ``size`` x ``size`` window (offsets rounded as torchvision rounds them)."""
    width, height = image.size
    if size > width or size > height:
        raise ValueError(f"Cannot centre-crop {size} px from an image of {width}x{height} px.")
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def _to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float32 [3, H, W] in [0, 1]."""
    array = np.array(image, dtype=np.uint8, copy=True)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous().to(torch.float32).div(255)


def imagenet(size: int = 224, resize: int | None = 256) -> Preprocessing:
    """Resize (short side), centre crop ``size``, [0,1], ImageNet mean/std."""
    return Preprocessing("imagenet", size=size, resize=resize, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def square_minus1to1(size: int = 128) -> Preprocessing:
    """Centre square crop, resize to ``size`` x ``size``, scale to [-1, 1] (B, BL)."""
    return Preprocessing("square_minus1to1", size=size)


def mini_imagenet(size: int = 64) -> Preprocessing:
    """Mini scale for ImageNet-normalised families: 64 px, ImageNet mean/std, no resize margin."""
    return Preprocessing("imagenet", size=size, resize=None, mean=IMAGENET_MEAN, std=IMAGENET_STD)
