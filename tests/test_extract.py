"""Extraction: shapes, batch invariance, the cache key, errors, the command line, catalogue models.

A tiny recurrent model is registered here, exactly as a user plugs in a model of their own:
one ``TimeResolvedModel`` and one ``catalogue.register`` call.
"""

import dataclasses
import sys

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from analysis_utils import __main__ as cli
from analysis_utils import catalogue, extract, preprocess, probes, store
from analysis_utils.errors import AnalysisUtilsError
from analysis_utils.models.base import (
    StepRecorder,
    TimeResolvedModel,
    global_average,
    load_state_dict_strict,
)

pytestmark = pytest.mark.usefixtures("isolated_cache")

CATALOGUE_MODELS = [name for name in catalogue.names() if name != "tiny_rnn"]


class TinyRecurrent(TimeResolvedModel):
    """h_1 = relu(W x); h_t = relu(W x + U h_{t-1}); penult = GAP(h_t); logits = fc(penult)."""

    def __init__(self, scale: str, steps: int, width: int = 8):
        super().__init__(steps, ("penult", "logits", "area1"))
        self.feedforward = nn.Conv2d(3, width, 3, stride=2, padding=1)
        self.lateral = nn.Conv2d(width, width, 3, padding=1)
        self.classifier = nn.Linear(width, catalogue.NUM_CLASSES[scale])

    def _readouts(self, x, names):
        recorder = StepRecorder(names)
        drive = self.feedforward(x)
        state = torch.relu(drive)
        for step in range(self.n_steps):
            if step > 0:
                state = torch.relu(drive + self.lateral(state))
            pooled = global_average(state)
            recorder.add("area1", state[:, :4])
            recorder.add("penult", pooled)
            recorder.add("logits", self.classifier(pooled))
        return recorder.stacked()


def _load_torch_checkpoint(model, path):
    load_state_dict_strict(model, torch.load(path, weights_only=True), str(path))


TINY_CARD = catalogue.ModelCard(
    name="tiny_rnn", display_name="TinyRNN", family="test", recurrence="within-layer",
    mechanism="additive", loss_timing="final step", counterpart=None, step_unit="t",
    default_steps=3, readouts=("penult", "logits", "area1"), headline_readout="logits",
    states={"baseline": 1, "after": 3},
    preprocessing={"mini": preprocess.mini_imagenet(64), "full": preprocess.imagenet(224)},
    official_weights=None, colors=("#999999", "#000000"), reference="tests/test_extract.py",
)
if "tiny_rnn" not in catalogue._REGISTRY:
    catalogue.register(TINY_CARD, build=lambda scale, steps: TinyRecurrent(scale, steps),
                       load_checkpoint=_load_torch_checkpoint)


@pytest.fixture(scope="module")
def probe(shared_tiny_dir):
    return probes.load("tiny", data_dir=shared_tiny_dir, images_per_category=3)


def _features(probe, tmp_path, **kwargs):
    options = {"weights": "untrained", "cache_dir": tmp_path / "cache", "progress": False,
               "device": "cpu"}
    return extract.features("tiny_rnn", probe, **{**options, **kwargs})


def test_shapes_values_and_metadata(probe, tmp_path):
    feats, meta = _features(probe, tmp_path, batch_size=5, readouts=("penult", "logits", "area1"))
    assert {k: tuple(v.shape) for k, v in feats.items()} == {
        "penult": (3, 12, 8), "logits": (3, 12, 100), "area1": (3, 12, 4)}
    assert all(v.dtype == torch.float32 and v.device.type == "cpu" for v in feats.values())

    model = catalogue.load("tiny_rnn", weights="untrained", seed=0)
    batch = torch.stack([TINY_CARD.preprocessing["mini"](image) for image in probe.images])
    with torch.inference_mode():
        direct = model.readouts(batch, ("penult", "logits", "area1"))
    for readout, tensor in direct.items():  # batches of 5 give what one batch of 12 gives
        torch.testing.assert_close(feats[readout], tensor, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(feats["penult"][0], feats["penult"][2])  # steps differ

    assert meta["weights"] == {"kind": "untrained", "seed": 0}
    assert meta["probe"]["content_hash"] == probe.content_hash
    assert meta["step_labels"] == ["t=1", "t=2", "t=3"] and meta["steps"] == 3
    assert meta["card"]["code_version"] == "1" and meta["card"]["states"]["after"] == 3
    assert meta["preprocessing"] == preprocess.mini_imagenet(64).spec
    assert set(meta["versions"]) >= {"torch", "analysis_utils", "numpy"}
    assert meta["cache"]["from_cache"] == {"penult": False, "logits": False, "area1": False}


def test_second_call_reads_the_cache_without_running_the_model(probe, tmp_path, monkeypatch):
    first, _ = _features(probe, tmp_path)

    def no_run(*args, **kwargs):
        raise AssertionError("the model ran although the cache holds the features")

    def no_load(*args, **kwargs):
        raise AssertionError("a network was built although the cache holds the features")

    monkeypatch.setattr(extract, "run_model", no_run)
    monkeypatch.setattr(catalogue, "load", no_load)  # the key comes from catalogue.identity
    second, meta = _features(probe, tmp_path)
    assert meta["cache"]["from_cache"] == {"penult": True, "logits": True}
    for readout in first:
        assert torch.equal(first[readout], second[readout])
    for path in meta["cache"]["files"].values():
        assert path.startswith(str(tmp_path / "cache" / "tiny_rnn"))


def test_only_missing_readouts_are_computed(probe, tmp_path, monkeypatch):
    _features(probe, tmp_path, readouts="penult")
    calls = []
    real = extract.run_model
    monkeypatch.setattr(extract, "run_model",
                        lambda model, p, readouts, **kw: calls.append(list(readouts))
                        or real(model, p, readouts, **kw))
    feats, meta = _features(probe, tmp_path, readouts=("penult", "area1"))
    assert calls == [["area1"]]
    assert meta["cache"]["from_cache"] == {"penult": True, "area1": False}
    assert list(feats) == ["penult", "area1"]


def _weights_file(tmp_path, seed):
    model = catalogue.build("tiny_rnn", seed=seed)
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


CHANGES = {
    "seed": lambda probe, tmp_path, mp: ({"seed": 1}, probe),
    "steps": lambda probe, tmp_path, mp: ({"steps": 4}, probe),
    "probe": lambda probe, tmp_path, mp: ({}, probe.subset(2)),
    "code_version": lambda probe, tmp_path, mp: (_replace_card(mp, code_version="2"), probe),
    "preprocessing": lambda probe, tmp_path, mp: (_replace_card(mp, preprocessing={
        "mini": preprocess.Preprocessing("imagenet", 64, None, preprocess.IMAGENET_MEAN,
                                         preprocess.IMAGENET_STD, interpolation="nearest"),
        "full": preprocess.imagenet(224)}), probe),
}


def _replace_card(monkeypatch, **changes):
    entry = catalogue._REGISTRY["tiny_rnn"]
    card = dataclasses.replace(entry.card, **changes)
    monkeypatch.setitem(catalogue._REGISTRY, "tiny_rnn", dataclasses.replace(entry, card=card))
    return {}


@pytest.mark.parametrize("change", CHANGES)
def test_any_change_to_the_key_recomputes(probe, tmp_path, monkeypatch, change):
    _features(probe, tmp_path, readouts="penult")
    kwargs, other_probe = CHANGES[change](probe, tmp_path, monkeypatch)
    _, meta = _features(other_probe, tmp_path, readouts="penult", **kwargs)
    assert meta["cache"]["from_cache"] == {"penult": False}
    _, again = _features(other_probe, tmp_path, readouts="penult", **kwargs)
    assert again["cache"]["from_cache"] == {"penult": True}


def test_changed_weights_file_recomputes(probe, tmp_path):
    path = _weights_file(tmp_path, seed=5)
    first, meta = _features(probe, tmp_path, weights=path, readouts="logits")
    assert meta["weights"]["kind"] == "file" and len(meta["weights"]["sha256"]) == 64
    path.unlink()
    _weights_file(tmp_path, seed=6)  # same path, other content
    second, meta = _features(probe, tmp_path, weights=path, readouts="logits")
    assert meta["cache"]["from_cache"] == {"logits": False}
    assert not torch.allclose(first["logits"], second["logits"])


@pytest.mark.parametrize("weights", ["untrained", "file"])
def test_identity_is_what_load_loads(tmp_path, weights):
    path = _weights_file(tmp_path, seed=5) if weights == "file" else weights
    model = catalogue.load("tiny_rnn", weights=path, seed=3, steps=4)
    loaded = catalogue.identity("tiny_rnn", weights=path, seed=3, steps=4)
    assert (loaded.n_steps, loaded.weights_id, loaded.load_spec) == (
        model.n_steps, model.weights_id, model.load_spec) and loaded.n_steps == 4
    assert loaded.card is model.card and loaded.scale == model.scale
    assert extract.cache_spec(loaded, probes_stub(), "penult") == extract.cache_spec(
        model, probes_stub(), "penult")


def probes_stub():
    """A stand-in with what cache_spec reads of a probe."""
    return type("ProbeStub", (), {"name": "tiny", "content_hash": "abc"})()


def test_identity_checks_the_weights_as_load_does(tmp_path):
    missing = tmp_path / "nowhere.safetensors"
    for call in (catalogue.identity, catalogue.load):
        with pytest.raises(AnalysisUtilsError, match="neither one of .* nor an existing file"):
            call("tiny_rnn", weights=missing)
        with pytest.raises(AnalysisUtilsError, match="Official weights exist only at full"):
            call("tiny_rnn", weights="official")


def test_identity_follows_a_changed_weights_file(tmp_path):
    path = _weights_file(tmp_path, seed=5)
    first = catalogue.identity("tiny_rnn", weights=path).weights_id["sha256"]
    path.unlink()
    _weights_file(tmp_path, seed=6)
    assert catalogue.identity("tiny_rnn", weights=path).weights_id["sha256"] != first


def test_force_recomputes(probe, tmp_path):
    _features(probe, tmp_path, readouts="penult")
    _, meta = _features(probe, tmp_path, readouts="penult", force=True)
    assert meta["cache"]["from_cache"] == {"penult": False}


def test_corrupt_cache_entry_is_recomputed_not_fatal(probe, tmp_path):
    first, meta = _features(probe, tmp_path, readouts="penult")
    path = meta["cache"]["files"]["penult"]
    with open(path, "r+b") as handle:
        handle.truncate(50)
    with pytest.warns(UserWarning, match="could not be read"):
        second, meta = _features(probe, tmp_path, readouts="penult")
    assert meta["cache"]["from_cache"] == {"penult": False}
    assert torch.equal(first["penult"], second["penult"])
    _, meta = _features(probe, tmp_path, readouts="penult")  # rewritten whole
    assert meta["cache"]["from_cache"] == {"penult": True}


@pytest.mark.parametrize("kwargs, message", [
    ({"readouts": ("penult", "fc9")}, "Unknown readout for 'tiny_rnn' 'fc9'.*'area1'"),
    ({"readouts": ()}, "at least one readout"),
    ({"steps": 0}, "steps must be a positive integer"),
    ({"steps": "3"}, "steps must be a positive integer"),
    ({"device": "tpu"}, "Unknown device 'tpu'"),
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"scale": "huge"}, "Unknown scale 'huge'"),
])
def test_bad_parameters(probe, tmp_path, kwargs, message):
    with pytest.raises(AnalysisUtilsError, match=message):
        _features(probe, tmp_path, **kwargs)


def test_unknown_model_and_bad_probe(probe):
    with pytest.raises(AnalysisUtilsError, match="Unknown model 'resnet'.*expected one of"):
        extract.features("resnet", probe)
    with pytest.raises(AnalysisUtilsError, match="probe must be a Probe"):
        extract.features("tiny_rnn", "tiny")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_asked_without_cuda(probe, tmp_path):
    with pytest.raises(AnalysisUtilsError, match="CUDA is not available"):
        _features(probe, tmp_path, device="cuda")


def test_features_for_models_checks_every_name_first(probe, tmp_path, monkeypatch):
    result = extract.features_for_models(["tiny_rnn"], probe, weights="untrained",
                                         cache_dir=tmp_path, progress=False, readouts="penult")
    assert list(result) == ["tiny_rnn"] and result["tiny_rnn"]["penult"].shape == (3, 12, 8)
    monkeypatch.setattr(extract, "features", lambda *a, **k: pytest.fail("work before checks"))
    with pytest.raises(AnalysisUtilsError, match="Unknown model 'nope'"):
        extract.features_for_models(["tiny_rnn", "nope"], probe)


# ----------------------------------------------------------------------------- command line


def test_cli_extract_prints_shapes_and_files(shared_tiny_dir, tmp_path, capsys):
    argv = ["extract", "--model", "tiny_rnn", "--weights", "untrained", "--probe", "tiny",
            "--data-dir", str(shared_tiny_dir), "--images-per-category", "2",
            "--cache-dir", str(tmp_path / "c"), "--device", "cpu"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "tiny_rnn penult: [T, N, D] = [3, 8, 8] (computed)" in out
    assert "tiny_rnn logits: [T, N, D] = [3, 8, 100] (computed)" in out
    written = [line.split(" -> ")[1] for line in out.splitlines() if " -> " in line]
    assert len(written) == 2 and all(path.startswith(str(tmp_path / "c")) for path in written)
    assert cli.main(argv) == 0
    assert "(cached)" in capsys.readouterr().out


def test_cli_errors_are_one_sentence(shared_tiny_dir, capsys):
    assert cli.main(["extract", "--model", "nope", "--data-dir", str(shared_tiny_dir),
                     "--images-per-category", "1"]) == 2
    assert "error: Unknown model 'nope'" in capsys.readouterr().err


def test_cli_list_prints_the_catalogue(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in catalogue.names():
        assert name in out


def test_cli_train_without_trainer_says_so(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "analysis_utils.train", None)
    import analysis_utils

    monkeypatch.delattr(analysis_utils, "train", raising=False)
    assert cli.main(["train", "--model", "bl"]) == 2
    assert "analysis_utils.train) is not part of this installation" in capsys.readouterr().err


# ----------------------------------------------------------------------------- catalogue models


@pytest.mark.parametrize("name", CATALOGUE_MODELS)
def test_catalogue_models_at_mini_scale(name, shared_tiny_dir, tmp_path):
    """Every catalogue model extracts and caches (4 images, at most 2 steps: kept fast)."""
    small = probes.load("tiny", data_dir=shared_tiny_dir, images_per_category=1)
    card = catalogue.card(name)
    steps = min(2, card.default_steps)
    kwargs = {"weights": "untrained", "steps": steps, "cache_dir": tmp_path, "progress": False,
              "device": "cpu"}
    feats, meta = extract.features(name, small, **kwargs)
    assert feats["penult"].shape[:2] == (steps, 4)
    assert feats["logits"].shape == (steps, 4, catalogue.NUM_CLASSES["mini"])
    assert torch.isfinite(feats["penult"]).all() and torch.isfinite(feats["logits"]).all()
    assert meta["preprocessing"] == card.preprocessing["mini"].spec
    assert meta["load_spec"]["steps"] == steps
    _, again = extract.features(name, small, **kwargs)
    assert all(again["cache"]["from_cache"].values())


def test_real_probe_extraction(real_tiny_dir, tmp_path):
    small = probes.load("tiny", data_dir=real_tiny_dir, images_per_category=1)
    feats, meta = _features(small, tmp_path, readouts="logits")
    assert feats["logits"].shape == (3, 100, 100)
    assert meta["probe"]["n_images"] == 100 and store.cache_dir(tmp_path) == tmp_path


def test_is_cached_answers_without_reading_or_running(probe, tmp_path):
    options = {"weights": "untrained", "cache_dir": tmp_path / "cache", "device": "cpu"}
    assert not extract.is_cached("tiny_rnn", probe, readouts="penult", **options)
    _features(probe, tmp_path, readouts="penult")
    assert extract.is_cached("tiny_rnn", probe, readouts="penult", **options)
    assert not extract.is_cached("tiny_rnn", probe, readouts=("penult", "logits"), **options)
    assert not extract.is_cached("tiny_rnn", probe, readouts="penult", **{**options, "seed": 1})
    assert not extract.is_cached("tiny_rnn", probe.subset(2), readouts="penult", **options)
