"""Shared fixtures: generated probes in the official layouts, and the real tiny probe.

- :func:`write_tiny_layout` writes a small Tiny-ImageNet tree (``tiny-imagenet-200/wnids.txt``,
  ``words.txt``, ``val/val_annotations.txt``, ``val/images/*.JPEG``) with generated images.
- :func:`write_imagenet_folder` writes the first ``k`` files per category of the reference
  study's manifest as small generated JPEGs, flat or in per-wnid subfolders.
- ``real_tiny_dir``: the folder named by ``ANALYSIS_UTILS_DATA`` (CI unpacks the real probe
  there); tests that use it skip with a reason when the variable is unset.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _image(rng: np.random.Generator, size: tuple[int, int], base: int) -> Image.Image:
    pixels = rng.integers(0, 60, size=(size[1], size[0], 3)) + base
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def write_tiny_layout(container: Path, n_wnids: int = 8, images_per_wnid: int = 3,
                      size: int = 64, seed: int = 0) -> Path:
    """A Tiny-ImageNet tree in ``container``; returns ``container`` (which holds the tree).

    The wnids are written shuffled (as the official wnids.txt is not sorted); the probe keeps
    every other one of the sorted list. File numbers interleave the categories.
    """
    rng = np.random.default_rng(seed)
    root = container / "tiny-imagenet-200"
    (root / "val" / "images").mkdir(parents=True)
    wnids = [f"n0{1000000 + 37 * i:07d}" for i in range(n_wnids)]
    shuffled = list(rng.permutation(wnids))
    (root / "wnids.txt").write_text("".join(f"{w}\n" for w in shuffled))
    (root / "words.txt").write_text("".join(f"{w}\tthing {i}, item {i}\n"
                                            for i, w in enumerate(wnids)))
    lines = []
    number = 0
    for _ in range(images_per_wnid):
        for c, wnid in enumerate(wnids):
            name = f"val_{number}.JPEG"
            _image(rng, (size, size), base=20 * c).save(root / "val" / "images" / name,
                                                          quality=90)
            lines.append(f"{name}\t{wnid}\t0\t0\t{size - 1}\t{size - 1}\n")
            number += 1
    (root / "val" / "val_annotations.txt").write_text("".join(lines))
    return container


def write_imagenet_folder(folder: Path, k: int = 1, nested: bool = False, seed: int = 0) -> Path:
    """The first ``k`` manifest files of every category as small JPEGs (80x60)."""
    from analysis_utils import probes

    rng = np.random.default_rng(seed)
    seen: dict[str, int] = {}
    for wnid, filename in probes.reference_manifest():
        if seen.get(wnid, 0) >= k:
            continue
        seen[wnid] = seen.get(wnid, 0) + 1
        target = folder / wnid / filename if nested else folder / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        _image(rng, (80, 60), base=len(seen)).save(target, quality=85)
    return folder


@pytest.fixture
def tiny_dir(tmp_path) -> Path:
    """A generated tiny layout: 8 wnids (so 4 probe categories) x 3 val images, 64 px."""
    return write_tiny_layout(tmp_path / "data")


@pytest.fixture(scope="session")
def shared_tiny_dir(tmp_path_factory) -> Path:
    """The same generated layout, written once per session (read-only use)."""
    return write_tiny_layout(tmp_path_factory.mktemp("tiny-shared"))


@pytest.fixture(scope="session")
def real_tiny_dir() -> Path:
    """The folder holding the real ``tiny-imagenet-200/`` probe, from ``ANALYSIS_UTILS_DATA``."""
    value = os.environ.get("ANALYSIS_UTILS_DATA")
    if not value:
        pytest.skip("ANALYSIS_UTILS_DATA is unset: unpack val-probe100.tar.gz and point it there")
    path = Path(value)
    if not (path / "tiny-imagenet-200").is_dir():
        pytest.skip(f"ANALYSIS_UTILS_DATA={value} holds no tiny-imagenet-200/ folder")
    return path


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """Keep a test's feature cache and user cache in its own temporary folder (opt-in)."""
    monkeypatch.setenv("ANALYSIS_UTILS_CACHE", str(tmp_path / "feature-cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
