"""AlexNet, LRM3 and LRA3: layouts, per-pass readouts, feedback maths, checkpoints, cards."""

import re

import pytest
import torch
import torchvision
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from analysis_utils import catalogue, preprocess
from analysis_utils.errors import AnalysisUtilsError
from analysis_utils.models import alexnet_lrm

FAMILY = ("alexnet", "lrm3", "lra3")

#: the 46 keys and shapes of the official LRM3 file after renaming (models-lrm-alexnet.md §8.4)
LRM3_KEYS = """
feedforward.features.0.weight 64,3,11,11
feedforward.features.0.bias 64
feedforward.features.3.weight 192,64,5,5
feedforward.features.3.bias 192
feedforward.features.6.weight 384,192,3,3
feedforward.features.6.bias 384
feedforward.features.8.weight 256,384,3,3
feedforward.features.8.bias 256
feedforward.features.10.weight 256,256,3,3
feedforward.features.10.bias 256
feedforward.classifier.1.weight 4096,9216
feedforward.classifier.1.bias 4096
feedforward.classifier.4.weight 4096,4096
feedforward.classifier.4.bias 4096
feedforward.classifier.6.weight 1000,4096
feedforward.classifier.6.bias 1000
lrm.features_8_modulation.from_classifier_6_to_features_8.neg_scale 1
lrm.features_8_modulation.from_classifier_6_to_features_8.pos_scale 1
lrm.features_8_modulation.from_classifier_6_to_features_8.rescale.norm.weight 1000
lrm.features_8_modulation.from_classifier_6_to_features_8.rescale.norm.bias 1000
lrm.features_8_modulation.from_classifier_6_to_features_8.modulation.weight 256,1000,1,1
lrm.features_8_modulation.from_classifier_6_to_features_8.modulation.bias 256
lrm.features_0_modulation.from_features_9_to_features_0.neg_scale 1
lrm.features_0_modulation.from_features_9_to_features_0.pos_scale 1
lrm.features_0_modulation.from_features_9_to_features_0.rescale.norm.weight 256,55,55
lrm.features_0_modulation.from_features_9_to_features_0.rescale.norm.bias 256,55,55
lrm.features_0_modulation.from_features_9_to_features_0.modulation.weight 64,256,1,1
lrm.features_0_modulation.from_features_9_to_features_0.modulation.bias 64
lrm.features_10_modulation.from_classifier_6_to_features_10.neg_scale 1
lrm.features_10_modulation.from_classifier_6_to_features_10.pos_scale 1
lrm.features_10_modulation.from_classifier_6_to_features_10.rescale.norm.weight 1000
lrm.features_10_modulation.from_classifier_6_to_features_10.rescale.norm.bias 1000
lrm.features_10_modulation.from_classifier_6_to_features_10.modulation.weight 256,1000,1,1
lrm.features_10_modulation.from_classifier_6_to_features_10.modulation.bias 256
lrm.features_3_modulation.from_features_12_to_features_3.neg_scale 1
lrm.features_3_modulation.from_features_12_to_features_3.pos_scale 1
lrm.features_3_modulation.from_features_12_to_features_3.rescale.norm.weight 256,27,27
lrm.features_3_modulation.from_features_12_to_features_3.rescale.norm.bias 256,27,27
lrm.features_3_modulation.from_features_12_to_features_3.modulation.weight 192,256,1,1
lrm.features_3_modulation.from_features_12_to_features_3.modulation.bias 192
lrm.features_6_modulation.from_classifier_2_to_features_6.neg_scale 1
lrm.features_6_modulation.from_classifier_2_to_features_6.pos_scale 1
lrm.features_6_modulation.from_classifier_2_to_features_6.rescale.norm.weight 4096
lrm.features_6_modulation.from_classifier_2_to_features_6.rescale.norm.bias 4096
lrm.features_6_modulation.from_classifier_2_to_features_6.modulation.weight 384,4096,1,1
lrm.features_6_modulation.from_classifier_2_to_features_6.modulation.bias 384
"""


def official_layout():
    rows = [line.split() for line in LRM3_KEYS.strip().splitlines()]
    return [(key, tuple(int(n) for n in shape.split(","))) for key, shape in rows]


def raw_official_key(key):
    """A post-rename key written back the way the raw file is expected to spell it."""
    key = key.replace("feedforward.", "backbone.")
    return "module." + re.sub(r"features_(\d+)", r"features\1", key)


def image(scale, n=2, seed=0):
    size = 224 if scale == "full" else 64
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def randomize_feedback(model, seed=0):
    """Non-trivial LayerNorm affines and unequal neg/pos gains: every step of the maths counts."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.lrm.named_parameters():
            noise = torch.rand(parameter.shape, generator=generator)
            if name.endswith("neg_scale"):
                parameter.copy_(0.2 + noise)
            elif name.endswith("pos_scale"):
                parameter.copy_(1.5 + noise)
            elif name.endswith("norm.weight"):
                parameter.copy_(0.5 + noise)
            elif name.endswith("norm.bias"):
                parameter.copy_(noise - 0.5)
    return model


def only_pathway(model, keep):
    """Zero the output (1x1 conv weight and bias) of every pathway but ``keep``."""
    with torch.no_grad():
        for group in model.lrm.values():
            for name, pathway in group.items():
                if name != keep:
                    pathway.modulation.weight.zero_()
                    pathway.modulation.bias.zero_()
    return model


def readouts(model, x, names=None):
    with torch.inference_mode():
        return model.readouts(x, names)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small CPU work runs far faster on one thread on a shared machine; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def full_lrm3():
    return randomize_feedback(catalogue.load("lrm3", scale="full", weights="untrained", seed=1))


@pytest.fixture(scope="module")
def full_lra3():
    return randomize_feedback(catalogue.load("lra3", scale="full", weights="untrained", seed=1))


@pytest.fixture(scope="module")
def full_alexnet():
    return catalogue.load("alexnet", scale="full", weights="untrained", seed=9)


# ----------------------------------------------------------------------------- shapes


MINI_DIMS = {"conv1": 24, "conv2": 72, "conv3": 144, "conv4": 96, "conv5": 96,
             "fc6": 1024, "penult": 1024, "logits": 100}
FULL_DIMS = {"conv1": 64, "conv2": 192, "conv3": 384, "conv4": 256, "conv5": 256,
             "fc6": 4096, "penult": 4096, "logits": 1000}


@pytest.mark.parametrize("name", FAMILY)
def test_mini_readout_shapes_per_step(name):
    model = catalogue.load(name, scale="mini", weights="untrained")
    out = readouts(model, image("mini", n=3))
    steps = 1 if name == "alexnet" else 3
    assert {key: tuple(value.shape) for key, value in out.items()} == {
        key: (steps, 3, dim) for key, dim in MINI_DIMS.items()}
    assert all(value.dtype == torch.float32 for value in out.values())


def test_full_readout_shapes_per_step(full_alexnet, full_lrm3):
    for model, steps in ((full_alexnet, 1), (full_lrm3, 3)):
        out = readouts(model, image("full", n=1))
        assert {key: tuple(value.shape) for key, value in out.items()} == {
            key: (steps, 1, dim) for key, dim in FULL_DIMS.items()}


def test_steps_parameter_sets_the_number_of_passes():
    model = catalogue.load("lra3", scale="mini", weights="untrained", steps=5)
    assert readouts(model, image("mini"), "logits")["logits"].shape == (5, 2, 100)


def test_readouts_pool_the_named_layers():
    model = catalogue.load("alexnet", scale="mini", weights="untrained", seed=2)
    x = image("mini")
    out = readouts(model, x)
    with torch.inference_mode():
        conv3 = model.features[:8](x.clone())
        pooled = torch.flatten(model.avgpool(model.features(x.clone())), 1)
        fc6 = model.classifier[:3](pooled)
        fc7 = model.classifier[3:6](fc6.clone())
        logits = model.classifier[6](fc7)
    torch.testing.assert_close(out["conv3"][0], conv3.mean(dim=(2, 3)))
    torch.testing.assert_close(out["fc6"][0], fc6)
    torch.testing.assert_close(out["penult"][0], fc7)
    torch.testing.assert_close(out["logits"][0], logits)
    assert (out["conv1"] >= 0).all() and (out["penult"] >= 0).all()  # after the ReLU


# ----------------------------------------------------------------------------- layouts


def test_full_lrm3_and_lra3_have_the_official_keys_and_parameter_count(full_lrm3, full_lra3):
    for model in (full_lrm3, full_lra3):
        layout = [(key, tuple(value.shape)) for key, value in model.state_dict().items()]
        assert layout == official_layout(), model.mechanism
        assert sum(p.numel() for p in model.parameters()) == 65_186_642


def test_same_seed_same_backbone_across_the_family():
    alexnet = catalogue.build("alexnet", scale="mini", seed=5)
    lrm3 = catalogue.build("lrm3", scale="mini", seed=5)
    lra3 = catalogue.build("lra3", scale="mini", seed=5)
    for key, value in alexnet.state_dict().items():
        assert torch.equal(lrm3.state_dict()["feedforward." + key], value), key
    for key, value in lrm3.state_dict().items():
        assert torch.equal(lra3.state_dict()[key], value), key


@pytest.mark.parametrize("name", FAMILY)
def test_same_seed_same_weights_and_outputs(name):
    first, second, other = (catalogue.load(name, scale="mini", weights="untrained", seed=s)
                            for s in (7, 7, 8))
    for key, value in first.state_dict().items():
        assert torch.equal(second.state_dict()[key], value), key
    x = image("mini")
    assert torch.equal(readouts(first, x, "logits")["logits"],
                       readouts(second, x, "logits")["logits"])
    assert not torch.allclose(readouts(first, x, "logits")["logits"],
                              readouts(other, x, "logits")["logits"])


def test_full_scale_seeding_is_reproducible(full_lrm3):
    again = randomize_feedback(catalogue.load("lrm3", scale="full", weights="untrained", seed=1))
    x = image("full", n=1)
    assert torch.equal(readouts(again, x, "logits")["logits"],
                       readouts(full_lrm3, x, "logits")["logits"])


@pytest.mark.parametrize("name", FAMILY)
def test_mini_cost_is_within_budget(name):
    model = catalogue.load(name, scale="mini", weights="untrained")
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.readouts(image("mini", n=1))
    assert counter.get_total_flops() <= 0.2e9


# ----------------------------------------------------------------------------- time semantics


@pytest.mark.parametrize("scale", ["mini", "full"])
def test_pass_1_is_alexnet_and_later_passes_differ(scale, request):
    for name in ("lrm3", "lra3"):
        if scale == "full":
            model, alexnet = request.getfixturevalue(f"full_{name}"), request.getfixturevalue(
                "full_alexnet")
        else:
            model = randomize_feedback(
                catalogue.load(name, scale=scale, weights="untrained", seed=1))
            alexnet = catalogue.load("alexnet", scale=scale, weights="untrained", seed=9)
        alexnet.load_state_dict(model.feedforward.state_dict())
        x = image(scale, n=1 if scale == "full" else 2)
        recurrent, feedforward = readouts(model, x), readouts(alexnet, x)
        for key in alexnet_lrm.READOUTS:
            assert torch.equal(recurrent[key][0], feedforward[key][0]), (name, key)
            for step in (1, 2):
                assert not torch.allclose(recurrent[key][step], recurrent[key][0]), (name, key)


@pytest.mark.parametrize("name", ["lrm3", "lra3"])
def test_zero_feedback_output_leaves_every_pass_equal_to_pass_1(name):
    model = randomize_feedback(catalogue.load(name, scale="mini", weights="untrained"))
    only_pathway(model, keep=None)
    out = readouts(model, image("mini"))
    for key, value in out.items():
        assert torch.equal(value[1], value[0]) and torch.equal(value[2], value[0]), key


@pytest.mark.parametrize("name", ["lrm3", "lra3"])
def test_multiplicative_scales_and_additive_shifts(name):
    """With only logits -> conv4 active and its 1x1 conv reduced to a bias c, M = c everywhere:
    LRM gives ReLU(x (1 + c)), LRA gives ReLU(x + c) at conv4 in pass 2; conv1..3 are unchanged."""
    model = catalogue.load(name, scale="mini", weights="untrained", seed=4)
    pathway = model.lrm["features_8_modulation"]["from_classifier_6_to_features_8"]
    only_pathway(model, keep="from_classifier_6_to_features_8")
    c = torch.linspace(-0.5, 0.5, pathway.modulation.bias.numel())
    with torch.no_grad():
        pathway.modulation.weight.zero_()
        pathway.modulation.bias.copy_(c)
    x = image("mini")
    out = readouts(model, x)
    with torch.inference_mode():
        conv4 = model.feedforward.features[:9](x.clone())
    shift = c[None, :, None, None]
    expected = {
        "multiplicative": F.relu(conv4 * (1 + shift)), "additive": F.relu(conv4 + shift),
    }[model.mechanism]
    torch.testing.assert_close(out["conv4"][1], expected.mean(dim=(2, 3)))
    if name == "lrm3":  # a positive gain commutes with the ReLU
        torch.testing.assert_close(out["conv4"][1], out["conv4"][0] * (1 + c))
    else:
        assert not torch.allclose(out["conv4"][1], out["conv4"][0] * (1 + c))
    for key in ("conv1", "conv2", "conv3"):
        assert torch.equal(out[key][1], out[key][0]), key


def reference_pathway(pathway, source, destination_size):
    """The spec's ModBlock (§3) written out independently: LayerNorm, tanh, resize, gain, 1x1."""
    weight, bias = pathway.rescale.norm.weight, pathway.rescale.norm.bias
    spatial = source.dim() == 4
    dims = tuple(range(1, source.dim()))
    if spatial:
        weight = F.interpolate(weight[None], size=source.shape[-2:], mode="bilinear",
                               align_corners=True)[0]
        bias = F.interpolate(bias[None], size=source.shape[-2:], mode="bilinear",
                             align_corners=True)[0]
    mean = source.mean(dim=dims, keepdim=True)
    variance = source.var(dim=dims, keepdim=True, unbiased=False)
    squashed = torch.tanh((source - mean) / torch.sqrt(variance + 1e-5) * weight + bias)
    if spatial:
        squashed = F.interpolate(squashed, size=destination_size, mode="bilinear",
                                 align_corners=True)
    else:
        squashed = squashed[:, :, None, None]
    negative = (squashed < 0).float()
    gained = squashed * (negative * pathway.neg_scale + (1 - negative) * pathway.pos_scale)
    kernel = pathway.modulation.weight[:, :, 0, 0]
    return torch.einsum("dc,nchw->ndhw", kernel, gained) + pathway.modulation.bias[:, None, None]


@pytest.mark.parametrize("name", ["lrm3", "lra3"])
def test_feedback_pathways_follow_the_spec(name):
    """Each pathway alone against the written-out maths: the destination of pass t is modulated
    by the source of pass t - 1 (map sources are checked in pass 2, vector sources, whose readout
    is the source itself, in passes 2 and 3)."""
    x = image("mini")
    cases = (  # pathway, destination readout, destination conv index, source module index
        ("from_features_9_to_features_0", "conv1", 0, 9),
        ("from_features_12_to_features_3", "conv2", 3, 12),
        ("from_classifier_2_to_features_6", "conv3", 6, "fc6"),
        ("from_classifier_6_to_features_10", "conv5", 10, "logits"),
    )
    for keep, readout, conv_index, source_at in cases:
        model = randomize_feedback(catalogue.load(name, scale="mini", weights="untrained", seed=6))
        only_pathway(model, keep=keep)
        out = readouts(model, x)
        pathway = model.lrm[f"features_{conv_index}_modulation"][keep]
        with torch.inference_mode():
            destination = model.feedforward.features[: conv_index + 1](x.clone())
            if isinstance(source_at, int):
                sources = [model.feedforward.features[: source_at + 1](x.clone())]
            else:
                sources = [out[source_at][0], out[source_at][1]]
        for step, source in enumerate(sources, start=2):
            with torch.inference_mode():
                m = reference_pathway(pathway, source, destination.shape[-2:])
            if model.mechanism == "multiplicative":
                expected = F.relu(destination + destination * m)
            else:
                expected = F.relu(destination + m)
            torch.testing.assert_close(out[readout][step - 1], expected.mean(dim=(2, 3)),
                                       msg=f"{keep}, pass {step}")
        assert not torch.allclose(out[readout][1], out[readout][0]), keep
        assert not torch.allclose(out[readout][2], out[readout][1]), keep


def test_training_backpropagates_through_the_passes():
    model = catalogue.build("lrm3", scale="mini", steps=2).train()
    logits = model.readouts(image("mini"), "logits")["logits"]
    F.cross_entropy(logits.flatten(0, 1), torch.tensor([3, 7, 3, 7])).backward()
    pathway = model.lrm["features_0_modulation"]["from_features_9_to_features_0"]
    assert pathway.modulation.weight.grad.abs().sum() > 0
    assert pathway.rescale.norm.weight.grad.abs().sum() > 0
    assert model.feedforward.features[0].weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- checkpoints


def test_official_renaming_rules():
    assert alexnet_lrm.official_lrm_key("module.backbone.features.10.bias") == (
        "feedforward.features.10.bias")
    assert alexnet_lrm.official_lrm_key(
        "module.lrm.features12_modulation.from_features9_to_features12.neg_scale") == (
        "lrm.features_12_modulation.from_features_9_to_features_12.neg_scale")
    assert alexnet_lrm.official_lrm_key("lrm.features_3_modulation.x") == (
        "lrm.features_3_modulation.x")


def test_full_lrm3_official_file_loads_strictly_and_reproduces(full_lrm3, tmp_path):
    raw = {raw_official_key(key): value for key, value in full_lrm3.state_dict().items()}
    assert len(raw) == 46 and all(key.startswith("module.backbone.") or
                                  key.startswith("module.lrm.features") for key in raw)
    path = tmp_path / "lrm3.pth"
    torch.save(raw, path)
    loaded = catalogue.load("lrm3", scale="full", weights=path, seed=123)
    x = image("full", n=1)
    assert torch.equal(readouts(loaded, x, "logits")["logits"],
                       readouts(full_lrm3, x, "logits")["logits"])


def test_full_alexnet_is_torchvision_alexnet_and_loads_its_file(tmp_path):
    reference = torchvision.models.alexnet(weights=None).eval()
    path = tmp_path / "alexnet-owt.pth"
    torch.save(reference.state_dict(), path)
    loaded = catalogue.load("alexnet", scale="full", weights=path, seed=3)
    assert [(k, v.shape) for k, v in loaded.state_dict().items()] == [
        (k, v.shape) for k, v in reference.state_dict().items()]
    assert sum(p.numel() for p in loaded.parameters()) == 61_100_840
    x = image("full", n=1)
    with torch.inference_mode():
        expected = reference(x)
    torch.testing.assert_close(readouts(loaded, x, "logits")["logits"][0], expected,
                               rtol=0, atol=0)


@pytest.mark.parametrize("container", [None, "state_dict", "model"])
@pytest.mark.parametrize("name", ["lrm3", "lra3"])
def test_mini_checkpoint_containers(name, container, tmp_path):
    source = randomize_feedback(catalogue.load(name, scale="mini", weights="untrained", seed=2))
    raw = {raw_official_key(key): value for key, value in source.state_dict().items()}
    path = tmp_path / "weights.pth"
    torch.save(raw if container is None else {container: raw, "epoch": 30}, path)
    loaded = catalogue.load(name, scale="mini", weights=path, seed=0)
    x = image("mini")
    assert torch.equal(readouts(loaded, x)["penult"], readouts(source, x)["penult"])


def test_missing_and_misshapen_keys_are_named(tmp_path):
    state = catalogue.build("lrm3", scale="mini").state_dict()
    raw = {raw_official_key(key): value for key, value in state.items()}
    missing = "lrm.features_3_modulation.from_features_12_to_features_3.modulation.bias"
    path = tmp_path / "missing.pth"
    torch.save({k: v for k, v in raw.items() if k != raw_official_key(missing)}, path)
    with pytest.raises(AnalysisUtilsError, match=re.escape(repr(missing))):
        catalogue.load("lrm3", scale="mini", weights=path)

    misshapen = "feedforward.classifier.4.weight"
    raw[raw_official_key(misshapen)] = torch.zeros(3, 3)
    torch.save(raw, path)
    with pytest.raises(AnalysisUtilsError, match=re.escape(repr(misshapen)) + ".*shape"):
        catalogue.load("lrm3", scale="mini", weights=path)

    with pytest.raises(AnalysisUtilsError, match="scale"):  # a mini file is not a full file
        torch.save({raw_official_key(k): v for k, v in state.items()}, path)
        catalogue.load("lra3", scale="full", weights=path)


def test_alexnet_refuses_lrm_keys(tmp_path):
    path = tmp_path / "prefixed.pth"
    model = catalogue.build("alexnet", scale="mini")
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, path)
    with pytest.raises(AnalysisUtilsError, match="'features.0.weight'"):
        catalogue.load("alexnet", scale="mini", weights=path)


def test_unreadable_files_get_one_sentence(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(AnalysisUtilsError, match="Could not read .*garbage.pth"):
        catalogue.load("lrm3", scale="mini", weights=garbage)
    not_tensors = tmp_path / "strings.pth"
    torch.save({"features.0.weight": "oops"}, not_tensors)
    with pytest.raises(AnalysisUtilsError, match="not a tensor"):
        catalogue.load("alexnet", scale="mini", weights=not_tensors)
    a_list = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], a_list)
    with pytest.raises(AnalysisUtilsError, match="not a state dict"):
        catalogue.load("alexnet", scale="mini", weights=a_list)


# ----------------------------------------------------------------------------- cards and options


def test_bad_build_parameters_are_refused():
    with pytest.raises(AnalysisUtilsError, match="exactly one step"):
        catalogue.load("alexnet", weights="untrained", steps=3)
    with pytest.raises(AnalysisUtilsError, match="takes no build options"):
        catalogue.load("lrm3", weights="untrained", mechanism="additive")
    with pytest.raises(AnalysisUtilsError, match="'multiplicative', 'additive'"):
        alexnet_lrm.LongRangeFeedbackAlexNet(alexnet_lrm.CONFIGS["mini"], "gated")
    with pytest.raises(AnalysisUtilsError, match="no published weights"):
        catalogue.load("lra3", scale="full", weights="official")


def test_cards():
    alexnet, lrm3, lra3 = (catalogue.card(name) for name in FAMILY)
    assert (alexnet.display_name, lrm3.display_name, lra3.display_name) == (
        "AlexNet", "LRM3", "LRA3")
    assert alexnet.colors == ("#928B8B", "#928B8B")
    assert lrm3.colors == ("#8E0B0D", "#E41A1C") and lra3.colors == ("#1B7F1B", "#2ECC71")
    assert (alexnet.baseline, alexnet.default_steps, alexnet.recurrent) == (1, 1, False)
    for card in (lrm3, lra3):
        assert (card.baseline, card.after, card.default_steps) == (1, 3, 3)
        assert card.loss_timing == "both passes" and card.counterpart == "alexnet"
        assert card.preprocessing["full"] == preprocess.imagenet(224, 256)
        assert card.preprocessing["mini"] == preprocess.mini_imagenet(64)
    assert (lrm3.mechanism, lra3.mechanism) == ("multiplicative", "additive")
    assert "inferred" in lra3.notes and lra3.official_weights is None
    assert alexnet.official_weights.url == (
        "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth")
    assert alexnet.official_weights.sha256 == "7be5be79"
    assert lrm3.official_weights.sha256 == "63ab1b3b06"
    assert lrm3.official_weights.url.endswith("final_weights-63ab1b3b06.pth")


@pytest.mark.parametrize("shape, size", [((3, 96, 3, 3), (32, 32)), ((2, 5, 7, 6), (15, 15)),
                                         ((1, 24, 8, 8), (3, 3))])
def test_channels_last_resize_equals_the_plain_bilinear_resize(shape, size):
    from analysis_utils.models.alexnet_lrm import _resize

    x = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
    expected = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=True)
    resized = _resize(x, size)
    assert resized.shape == expected.shape
    assert torch.equal(resized, expected)
