"""Perturbations: identity at level 0, coverage, seeds, cache keys, clutter's sources, sizes,
the probe helper, and every error."""

import json
import math

import pytest
import torch
from conftest import write_tiny_layout

from analysis_utils import perturb, probes, store
from analysis_utils.errors import AnalysisUtilsError
from analysis_utils.perturb import PerturbationSpec

NAMES = tuple(perturb.PERTURBATIONS)
MIDDLE = {"occlusion": 0.4, "clutter": 3, "noise": 0.1, "phase": 0.5}
SIZES = [(64, 64), (256, 256), (45, 70)]


def _images(n: int, h: int, w: int, seed: int = 0, low: int = 0, high: int = 256):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, (n, 3, h, w), dtype=torch.uint8, generator=generator)


def _labels(n: int, categories: int = 4) -> torch.Tensor:
    return torch.arange(n) * categories // n  # sorted, as the probe orders them


def test_the_registry_lists_four_perturbations_with_their_levels():
    rows = {row["name"]: row for row in perturb.perturbations()}
    assert set(rows) == {"occlusion", "clutter", "noise", "phase"}
    assert rows["clutter"]["levels"] == "0..8" and rows["occlusion"]["levels"] == "0..1"
    assert all(row["meaning"] and row["default_levels"][0] == 0 for row in rows.values())
    grid = perturb.specs("noise", [0, 0.1, 0.2], seed=4)
    assert [s.level for s in grid] == [0.0, 0.1, 0.2] and {s.seed for s in grid} == {4}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", SIZES)
def test_level_zero_is_the_identity_and_other_levels_are_not(name, size):
    images = _images(8, *size)
    labels = _labels(8)
    zero = PerturbationSpec(name, 0, seed=3)
    assert zero.is_identity
    assert torch.equal(perturb.apply(zero, images, labels), images)
    out = perturb.apply(PerturbationSpec(name, MIDDLE[name], seed=3), images, labels)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    changed = (out != images).flatten(1).any(1)
    assert changed.all(), f"{name} left some images untouched"
    assert torch.equal(images, _images(8, *size)), "the input was modified in place"


@pytest.mark.parametrize("size", SIZES)
def test_occlusion_covers_the_requested_fraction_within_one_patch(size):
    h, w = size
    images = _images(20, h, w, high=60)  # no pixel equals the mean grey (124, 116, 104)
    fill = torch.tensor(perturb.MEAN_RGB, dtype=torch.uint8).view(1, 3, 1, 1)
    largest_patch = math.ceil(h / 8) * math.ceil(w / 8) / (h * w)
    previous = torch.zeros(20, h, w, dtype=torch.bool)
    for level in (0.1, 0.25, 0.5, 0.77, 1.0):
        out = perturb.apply(PerturbationSpec("occlusion", level, seed=1), images)
        covered = (out != images).any(1)
        assert torch.equal(out, torch.where(covered[:, None], fill, images))  # mean grey only
        fraction = covered.flatten(1).float().mean(1)
        assert (fraction - level).abs().max() <= 0.5 * largest_patch + 1e-9
        assert (covered | ~previous).all(), "a higher level must cover a superset"
        previous = covered
    assert perturb.MEAN_RGB == (124, 116, 104)
    # the patches are the cells of an 8 x 8 grid: 8 px squares at 64 px
    if size == (64, 64):
        cells = covered.view(20, 8, 8, 8, 8).float()
        assert (cells.amin((2, 4)) == cells.amax((2, 4))).all()


@pytest.mark.parametrize("name", NAMES)
def test_the_same_seed_gives_the_same_pixels_and_another_seed_others(name):
    images, labels = _images(12, 64, 64), _labels(12)
    spec = PerturbationSpec(name, MIDDLE[name], seed=7)
    first = perturb.apply(spec, images, labels)
    assert torch.equal(first, perturb.apply(PerturbationSpec(name, MIDDLE[name], 7), images,
                                            labels))
    other = perturb.apply(PerturbationSpec(name, MIDDLE[name], seed=8), images, labels)
    assert (first != other).flatten(1).any(1).all(), "another seed must change every image"


@pytest.mark.parametrize("name", NAMES)
def test_a_subset_or_batch_gets_the_same_pixels_as_the_full_set(name):
    images, labels = _images(16, 64, 64), _labels(16)
    spec = PerturbationSpec(name, MIDDLE[name], seed=2)
    full = perturb.apply(spec, images, labels)
    keep = [13, 2, 7, 8]
    pool = (images, labels)  # clutter: the same pool of sources as the full set
    part = perturb.apply(spec, images[keep], labels[keep], ids=keep, sources=pool)
    assert torch.equal(part, full[keep])
    # without the ids, positions 0..3 seed them: other pixels (guards against ignoring ids)
    shifted = perturb.apply(spec, images[keep], labels[keep], sources=pool)
    assert not torch.equal(shifted, full[keep])


def test_cache_keys_differ_across_perturbation_specs():
    specs = [PerturbationSpec(name, level, seed) for name in NAMES for seed in (0, 1)
             for level in perturb.PERTURBATIONS[name].default_levels[1:3]]
    keys = [store.key({"model": "alexnet", "perturbation": s.key()}) for s in specs]
    assert len(set(keys)) == len(specs)
    assert PerturbationSpec("clutter", 2.0).key() == PerturbationSpec("clutter", 2).key()
    assert PerturbationSpec("noise", 1).key() == {"name": "noise", "level": 1.0, "seed": 0,
                                                  "version": 1}
    json.dumps(specs[0].key())  # JSON-able, for the cache's spec file
    assert PerturbationSpec("phase", 0.5, 3) == PerturbationSpec("phase", 0.5, 3)


def test_clutter_pastes_only_objects_of_other_categories():
    n, categories = 24, 3
    labels = _labels(n, categories)
    colours = torch.stack([torch.tensor([10 * i, 250 - 10 * i, 40 + 5 * i]) for i in range(n)])
    images = colours.to(torch.uint8).view(n, 3, 1, 1).expand(n, 3, 64, 64).contiguous()
    owner = {tuple(c.tolist()): i for i, c in enumerate(colours)}
    out = perturb.apply(PerturbationSpec("clutter", 8, seed=5), images, labels)
    pasted = 0
    for i in range(n):
        seen = {tuple(p) for p in out[i].flatten(1).T.tolist()}
        assert seen <= set(owner), "a pasted object must keep its source's pixels"
        sources = {owner[c] for c in seen} - {i}
        assert sources, f"image {i} got no object"
        assert all(labels[s] != labels[i] for s in sources), f"image {i} got its own category"
        pasted += (out[i] != images[i]).any(0).float().mean().item()
    assert pasted / n > 0.3
    # level 8 pastes level 7's objects, then one more on top: a single solid square of one source
    fewer = perturb.apply(PerturbationSpec("clutter", 7, seed=5), images, labels)
    for i in range(n):
        rows, cols = torch.nonzero((out[i] != fewer[i]).any(0), as_tuple=True)
        if len(rows):
            box = out[i][:, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
            assert box.shape[1] <= 32 and box.shape[2] <= 32
            assert (box == box[:, :1, :1]).all()


def test_clutter_objects_are_resized_sources_at_a_quarter_to_half_the_side():
    labels = torch.tensor([0, 1])
    target = torch.zeros(1, 3, 256, 256, dtype=torch.uint8)
    source = torch.full((1, 3, 64, 64), 200, dtype=torch.uint8)
    pool = (torch.cat([torch.zeros_like(source), source]), labels)
    for seed in range(6):
        out = perturb.apply(PerturbationSpec("clutter", 1, seed), target, labels[:1],
                            sources=pool)
        rows, cols = torch.nonzero(out[0, 0] == 200, as_tuple=True)
        side_h, side_w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert side_h == side_w and 64 <= side_h <= 128
        assert len(rows) == side_h * side_w  # one solid square


@pytest.mark.parametrize("size", [(64, 64), (256, 256)])
def test_noise_has_the_requested_spread_and_phase_keeps_mean_and_amplitudes(size):
    images = _images(6, *size, low=100, high=156)
    noisy = perturb.apply(PerturbationSpec("noise", 0.05), images).float()
    spread = (noisy - images.float()).std().item()
    assert spread == pytest.approx(0.05 * 255, rel=0.03)
    flat = torch.full((6, 3, *size), 128, dtype=torch.uint8)
    flat[:, :, : size[0] // 2] = 118  # a low-contrast edge: no clipping after scrambling
    scrambled = perturb.apply(PerturbationSpec("phase", 1.0), flat)
    assert not torch.equal(scrambled, flat)
    assert scrambled.float().mean((2, 3)).sub(flat.float().mean((2, 3))).abs().max() < 0.5
    amplitude = torch.fft.rfft2(scrambled.float()).abs()
    reference = torch.fft.rfft2(flat.float()).abs()
    assert (amplitude - reference).norm() / reference.norm() < 0.05


def test_perturb_probe_uses_file_ids_so_a_cut_probe_keeps_its_pixels(tmp_path):
    probe = probes.load("tiny", data_dir=write_tiny_layout(tmp_path), images_per_category=3)
    spec = PerturbationSpec("noise", 0.2, seed=1)
    out = perturb.perturb_probe(spec, probe)
    assert len(out) == len(probe) and all(im.size == (64, 64) and im.mode == "RGB" for im in out)
    ids = [perturb.file_id(name) for name in probe.file_names]
    expected = perturb.apply(spec, perturb.images_to_tensor(probe.images), probe.labels, ids=ids)
    assert torch.equal(perturb.images_to_tensor(out), expected)
    cut = probe.subset(2)
    kept = [probe.file_names.index(name) for name in cut.file_names]
    assert torch.equal(perturb.images_to_tensor(perturb.perturb_probe(spec, cut)),
                       expected[kept])
    assert perturb.perturb_probe(PerturbationSpec("clutter", 0), probe) == list(probe.images)
    cluttered = perturb.perturb_probe(PerturbationSpec("clutter", 2, seed=1), probe)
    assert perturb.images_to_tensor(cluttered).shape == (12, 3, 64, 64)
    # positions: the same pixels as in the whole probe's result (clutter: the same pool)
    picks = [7, 0, 11]
    some = perturb.perturb_probe(PerturbationSpec("clutter", 2, seed=1), probe, positions=picks)
    assert torch.equal(perturb.images_to_tensor(some),
                       perturb.images_to_tensor(cluttered)[picks])
    with pytest.raises(AnalysisUtilsError, match="positions must be probe positions from 0 to 11"):
        perturb.perturb_probe(spec, probe, positions=[12])


def test_perturb_probe_handles_images_of_different_sizes(tmp_path):
    probe = probes.load("tiny", data_dir=write_tiny_layout(tmp_path), images_per_category=2)
    sizes = [(64, 64), (90, 60), (64, 64), (120, 80), (50, 70), (64, 64), (90, 60), (30, 40)]
    probe.images = [perturb.tensor_to_pil(_images(1, h, w, seed=i)[0])
                    for i, (h, w) in enumerate(sizes)]
    for name in NAMES:
        out = perturb.perturb_probe(PerturbationSpec(name, MIDDLE[name]), probe)
        assert [im.size for im in out] == [im.size for im in probe.images]
        assert all(perturb.pil_to_tensor(a).ne(perturb.pil_to_tensor(b)).any()
                   for a, b in zip(out, probe.images))


def _one_sentence(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message.endswith(".")
    return message


@pytest.mark.parametrize(("name", "level", "words"), [
    ("blur", 0.5, r"Unknown perturbation 'blur'; expected one of: 'occlusion', 'clutter'"),
    ("occlusion", 1.5, r"occlusion level must be a number from 0 to 1 \(fraction"),
    ("noise", -0.1, r"noise level must be a number from 0 to 1"),
    ("phase", float("nan"), r"phase level must be a number from 0 to 1"),
    ("clutter", 9, r"clutter level must be an integer from 0 to 8 \(number of objects"),
    ("clutter", 2.5, r"clutter level must be an integer from 0 to 8"),
    ("noise", "0.1", r"noise level must be a number .* got '0.1'"),
    ("noise", True, r"noise level must be a number .* got True"),
])
def test_an_unknown_perturbation_or_a_level_out_of_range_gets_one_sentence(name, level, words):
    with pytest.raises(AnalysisUtilsError, match=words) as excinfo:
        PerturbationSpec(name, level)
    _one_sentence(excinfo)


def test_bad_images_labels_ids_seeds_and_pools_get_one_sentence():
    images, labels = _images(4, 64, 64), _labels(4, 2)
    spec = PerturbationSpec("clutter", 2)
    cases = [
        (lambda: perturb.apply(spec, images.float(), labels), "uint8 tensor \\[N, 3, H, W\\]"),
        (lambda: perturb.apply(spec, images[:, :1], labels), "uint8 tensor \\[N, 3, H, W\\]"),
        (lambda: perturb.apply(spec, images), "clutter needs the images' labels"),
        (lambda: perturb.apply(spec, images, labels[:3]), "integer tensor \\[4\\]"),
        (lambda: perturb.apply(spec, images, labels, ids=[0, 0, 1, 2]), "4 distinct"),
        (lambda: perturb.apply(spec, images, torch.zeros(4, dtype=torch.int64)),
         "no source image outside category 0"),
        (lambda: perturb.apply(spec, images, labels, sources=(images[:, :, :, :32], labels)),
         "must be square objects"),
        (lambda: perturb.apply(("noise", 0.1, 0), images), "must be a PerturbationSpec"),
        (lambda: PerturbationSpec("noise", 0.1, seed=-1), "non-negative integer"),
        (lambda: perturb.specs("noise", 0.1), "non-empty list of numbers"),
        (lambda: perturb.images_to_tensor(
            [perturb.tensor_to_pil(images[0]), perturb.tensor_to_pil(_images(1, 32, 32)[0])]),
         "2 different sizes"),
        (lambda: perturb.perturb_probe(spec, images), "must be a Probe"),
    ]
    for call, words in cases:
        with pytest.raises(AnalysisUtilsError, match=words) as excinfo:
            call()
        _one_sentence(excinfo)
