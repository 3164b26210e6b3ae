"""The shipped mini zoo: seven files that load strictly, match the manifest, and are trained.

The zoo ships in analysis_utils/zoo/mini (trained with ``make zoo ZOO_DEVICE=cpu``); the
completeness test fails when the manifest or any of the seven is missing. The accuracy tests
need the real tiny probe: ``ANALYSIS_UTILS_DATA`` must name a folder holding
``tiny-imagenet-200/val`` (CI extracts val-probe100.tar.gz there).
"""

import os
from pathlib import Path

import pytest
import torch

from analysis_utils import catalogue, train
from analysis_utils.weights import ZOO_DIR, file_sha256, zoo_manifest

MANIFEST = zoo_manifest("mini")
MODELS = MANIFEST.get("models", {})
DATA = os.environ.get("ANALYSIS_UTILS_DATA")
needs_probe = pytest.mark.skipif(
    not DATA, reason="ANALYSIS_UTILS_DATA is not set (it names the folder holding "
                     "tiny-imagenet-200/val, the real tiny probe)")


#: the models the shipped manifest lists
SHIPPED = [name for name in train.ZOO_MODELS if name in MODELS]


def test_the_manifest_lists_zoo_models_within_their_share_of_40_mb():
    assert set(MODELS) <= set(train.ZOO_MODELS), sorted(set(MODELS) - set(train.ZOO_MODELS))
    files = [ZOO_DIR / "mini" / f"{name}.safetensors" for name in SHIPPED]
    assert all(path.exists() for path in files)
    assert sum(path.stat().st_size for path in files) <= 40e6 * len(files) / 7
    assert all(MODELS[name]["bytes"] == (ZOO_DIR / "mini" / f"{name}.safetensors").stat().st_size
               for name in SHIPPED)


def test_the_zoo_is_complete():
    missing = [name for name in train.ZOO_MODELS if name not in MODELS]
    assert not missing, f"the shipped mini zoo lacks {', '.join(missing)}"
    assert sum(MODELS[name]["bytes"] for name in train.ZOO_MODELS) <= 40e6


@pytest.mark.parametrize("name", SHIPPED)
def test_each_file_matches_its_hash_and_loads_strictly(name):
    entry = MODELS[name]
    path = ZOO_DIR / "mini" / f"{name}.safetensors"
    assert file_sha256(path) == entry["sha256"]
    model = catalogue.load(name, scale="mini", weights="trained")  # strict, hash-checked
    assert model.weights_id == {"kind": "trained", "sha256": entry["sha256"]}
    assert sum(p.numel() for p in model.parameters()) == entry["parameters"]
    assert all(p.dtype == torch.float32 for p in model.parameters())  # float16 cast back
    card = catalogue.card(name)
    assert len(entry["accuracy"]["top1"]) == len(entry["accuracy"]["top5"]) == card.default_steps
    assert entry["config"]["loss_timing"] == card.loss_timing
    untrained = catalogue.load(name, scale="mini", weights="untrained", seed=0)
    differs = [not torch.equal(a, b) for a, b in zip(model.parameters(), untrained.parameters())]
    assert any(differs)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread: on a shared CPU two threads spin-wait (ConvRNN ran 10x slower with two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def probe_subset():
    """A fixed 500-image subset of the real tiny probe: the first 5 val images per category."""
    return train.load_validation_data(Path(DATA), per_class=5)


@needs_probe
@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_trained_models_are_far_above_chance_and_untrained_ones_are_not(name, probe_subset):
    assert len(probe_subset) == 500
    preprocessing = catalogue.card(name).preprocessing["mini"]
    trained = catalogue.load(name, scale="mini", weights="trained")
    accuracy = train.evaluate(trained, probe_subset, preprocessing, batch_size=250)
    assert accuracy["top1"][-1] >= 0.20, f"{name}: final-step top-1 {accuracy['top1'][-1]:.1%}"
    untrained = catalogue.load(name, scale="mini", weights="untrained", seed=0)
    chance = train.evaluate(untrained, probe_subset, preprocessing, batch_size=250)
    assert chance["top1"][-1] <= 0.05, f"{name}: untrained top-1 {chance['top1'][-1]:.1%}"


@pytest.fixture(scope="module")
def whole_probe():
    return train.load_validation_data(Path(DATA))


@needs_probe
@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_the_manifest_accuracy_is_reproduced_on_the_whole_probe(name, whole_probe):
    """The shipped file, loaded as the analysis loads it, gives the manifest's final-step top-1
    on the 5000-image probe to within 0.1 points, and reaches the zoo's 25% floor."""
    assert len(whole_probe) == 5000
    entry = MODELS[name]
    model = catalogue.load(name, scale="mini", weights="trained")
    preprocessing = catalogue.card(name).preprocessing["mini"]
    accuracy = train.evaluate(model, whole_probe, preprocessing, batch_size=250)
    assert abs(accuracy["top1"][-1] - entry["accuracy"]["top1"][-1]) <= 0.001
    assert entry["accuracy"]["top1"][-1] >= 0.25
    assert len(entry["accuracy"]["nearest_centroid_top1"]) == catalogue.card(name).default_steps
