"""The card transforms equal torchvision's PIL pipeline bit for bit (they no longer import it)."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from analysis_utils import preprocess


def _torchvision_reference(recipe: preprocess.Preprocessing, image: Image.Image) -> torch.Tensor:
    """The transforms as torchvision writes them (the recipes' original implementation)."""
    image = image.convert("RGB")
    mode = TF.InterpolationMode(recipe.interpolation)
    if recipe.recipe == "imagenet":
        if recipe.resize is not None:
            image = TF.resize(image, recipe.resize, interpolation=mode)
        elif min(image.size) != recipe.size:
            image = TF.resize(image, recipe.size, interpolation=mode)
        image = TF.center_crop(image, [recipe.size, recipe.size])
        return TF.normalize(TF.to_tensor(image), list(recipe.mean), list(recipe.std))
    side = min(image.size)
    image = TF.center_crop(image, [side, side])
    if side != recipe.size:
        image = TF.resize(image, [recipe.size, recipe.size], interpolation=mode)
    return TF.to_tensor(image) * 2.0 - 1.0


def _image(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4}.get(mode)
    shape = (height, width) if channels is None else (height, width, channels)
    return Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode=mode)


RECIPES = {
    "imagenet 224/256": preprocess.imagenet(),
    "mini imagenet 64": preprocess.mini_imagenet(),
    "square 128": preprocess.square_minus1to1(),
    "square 64": preprocess.square_minus1to1(64),
}
SIZES = [(64, 64), (80, 60), (60, 80), (500, 375), (333, 500), (57, 91), (256, 256), (129, 128)]


@pytest.mark.parametrize("recipe", list(RECIPES), ids=list(RECIPES))
@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_recipes_equal_torchvision_bit_for_bit(recipe, size):
    image = _image(*size, seed=size[0] * 1000 + size[1])
    ours = RECIPES[recipe](image)
    assert ours.dtype == torch.float32
    assert torch.equal(ours, _torchvision_reference(RECIPES[recipe], image))


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_other_image_modes_are_converted_to_rgb(mode):
    image = _image(70, 90, mode=mode, seed=3)
    recipe = preprocess.mini_imagenet()
    out = recipe(image)
    assert out.shape == (3, 64, 64)
    assert torch.equal(out, _torchvision_reference(recipe, image))


def test_bicubic_interpolation_is_honoured():
    image = _image(300, 200, seed=5)
    bilinear = preprocess.imagenet()
    bicubic = preprocess.Preprocessing("imagenet", size=224, resize=256, mean=bilinear.mean,
                                       std=bilinear.std, interpolation="bicubic")
    assert torch.equal(bicubic(image), _torchvision_reference(bicubic, image))
    assert not torch.equal(bicubic(image), bilinear(image))


def test_importing_the_package_does_not_import_torchvision():
    import subprocess
    import sys

    code = ("import sys, analysis_utils.book, analysis_utils.extract, analysis_utils.catalogue; "
            "print('torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
