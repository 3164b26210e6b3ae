"""CORnet-RT: architecture and keys, per-step readouts, the official unrolling, checkpoints."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from analysis_utils import catalogue
from analysis_utils.errors import AnalysisUtilsError
from analysis_utils.models.cornet_rt import AREAS, CONFIGS, CORnetRT, load_checkpoint

# the 30 keys and shapes of the official file (after removing 'module.'), from the reference notes
OFFICIAL_SHAPES = {}
for _area, (_cin, _cout, _k) in {"V1": (3, 64, 7), "V2": (64, 128, 3), "V4": (128, 256, 3),
                                 "IT": (256, 512, 3)}.items():
    OFFICIAL_SHAPES.update({
        f"{_area}.conv_input.weight": (_cout, _cin, _k, _k),
        f"{_area}.conv_input.bias": (_cout,),
        f"{_area}.norm_input.weight": (_cout,),
        f"{_area}.norm_input.bias": (_cout,),
        f"{_area}.conv1.weight": (_cout, _cout, 3, 3),
        f"{_area}.norm1.weight": (_cout,),
        f"{_area}.norm1.bias": (_cout,),
    })
OFFICIAL_SHAPES["decoder.linear.weight"] = (1000, 512)
OFFICIAL_SHAPES["decoder.linear.bias"] = (1000,)

SIZES = {"mini": 64, "full": 224}  # the cards' input sizes, which catalogue models require
WIDTHS = {"full": {"V1": 64, "V2": 128, "V4": 256, "IT": 512, "penult": 512, "logits": 1000},
          "mini": {"V1": 16, "V2": 32, "V4": 80, "IT": 192, "penult": 192, "logits": 100}}


def randomised(scale: str, seed: int = 0, steps: int = 5) -> CORnetRT:
    """A model whose GroupNorm affine parameters are random too (so t=1 constants are not 0)."""
    model = catalogue.build("cornet_rt", scale=scale, seed=seed, steps=steps).eval()
    generator = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".norm" in name:
                base = 1.0 if name.endswith("weight") else 0.0
                parameter.copy_(base + 0.5 * torch.randn(parameter.shape, generator=generator))
    return model


def images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def run(model, x, names=None):
    with torch.inference_mode():
        return model.readouts(x, names)


def save_official(model, path):
    """Write ``model`` as the official file is laid out: a dict, 'state_dict', 'module.' keys."""
    state = {f"module.{key}": value.clone() for key, value in model.state_dict().items()}
    torch.save({"epoch": 25, "state_dict": state}, path)


def test_full_scale_has_the_official_keys_shapes_and_parameter_count():
    model = catalogue.build("cornet_rt", scale="full")
    shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    assert shapes == OFFICIAL_SHAPES
    assert sum(p.numel() for p in model.parameters()) == 5_208_936
    assert model.V1.conv1.bias is None and model.V1.conv_input.bias is not None
    assert model.IT.norm1.num_groups == 32 and model.IT.norm1.eps == 1e-5


def test_mini_scale_keeps_the_key_names():
    mini = catalogue.build("cornet_rt", scale="mini")
    assert set(mini.state_dict()) == set(OFFICIAL_SHAPES)
    assert mini.decoder.linear.out_features == 100


@pytest.mark.parametrize("scale, size, n", [("mini", 64, 3), ("full", 224, 1)])
def test_readout_shapes_per_step(scale, size, n):
    model = catalogue.load("cornet_rt", scale=scale, weights="untrained")
    out = run(model, images(n, size))
    assert set(out) == {"penult", "logits", *AREAS}
    for name, width in WIDTHS[scale].items():
        assert out[name].shape == (5, n, width), name
        assert out[name].dtype == torch.float32


def test_steps_is_a_parameter_and_later_steps_do_not_change_earlier_ones():
    x = images(2, 64)
    five = run(catalogue.load("cornet_rt", weights="untrained", seed=3), x)
    seven = run(catalogue.load("cornet_rt", weights="untrained", seed=3, steps=7), x)
    assert seven["logits"].shape == (7, 2, 100)
    for name in five:
        torch.testing.assert_close(seven[name][:5], five[name], rtol=0, atol=0)


@pytest.mark.parametrize("scale", ["mini", "full"])
def test_same_seed_same_weights_and_outputs(scale):
    a = catalogue.load("cornet_rt", scale=scale, weights="untrained", seed=7)
    b = catalogue.load("cornet_rt", scale=scale, weights="untrained", seed=7)
    c = catalogue.load("cornet_rt", scale=scale, weights="untrained", seed=8)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert not torch.equal(a.IT.conv1.weight, c.IT.conv1.weight)
    x = images(2, SIZES[scale])
    assert torch.equal(run(a, x, "logits")["logits"], run(b, x, "logits")["logits"])


@pytest.mark.parametrize("scale", ["mini", "full"])
def test_image_reaches_v1_v2_v4_it_at_steps_1_2_3_4(scale):
    model = randomised(scale)
    out = run(model, images(3, SIZES[scale], seed=1), names=None)
    first_image_driven = {"V1": 1, "V2": 2, "V4": 3, "IT": 4, "penult": 4, "logits": 4}
    for name, first in first_image_driven.items():
        per_step = out[name]
        for step in range(1, first):  # identical for every image
            spread = (per_step[step - 1] - per_step[step - 1][:1]).abs().max().item()
            assert spread < 1e-5, (name, step, spread)
        differences = (per_step[first - 1] - per_step[first - 1][:1]).abs().max().item()
        assert differences > 1e-3, (name, first, differences)


def test_first_step_of_v2_v4_it_is_relu_of_the_norm1_bias():
    # official t=0: input path skipped, zero placeholder, conv1 (no bias) -> GN gives its bias
    model = randomised("mini", seed=2)
    out = run(model, images(2, 64))
    for area in ("V2", "V4", "IT"):
        expected = F.relu(getattr(model, area).norm1.bias.detach()).expand(2, -1)
        torch.testing.assert_close(out[area][0], expected, rtol=0, atol=1e-6)
    assert (out["IT"][0] > 0).any()  # so the check above is not trivially about zeros


def _reference_unrolling(model: CORnetRT, x: torch.Tensor, steps: int) -> list[dict]:
    """The spec's equations written with functional ops, for comparison."""

    def block(b, inp, state, size):
        if inp is None:
            skip = torch.zeros(x.shape[0], b.out_channels, *size)
        else:
            skip = F.conv2d(inp, b.conv_input.weight, b.conv_input.bias,
                            stride=b.conv_input.stride, padding=b.conv_input.padding)
            skip = F.relu(F.group_norm(skip, b.norm_input.num_groups, b.norm_input.weight,
                                       b.norm_input.bias, eps=1e-5))
        if state is not None:
            skip = skip + state
        y = F.conv2d(skip, b.conv1.weight, padding=1)
        return F.relu(F.group_norm(y, b.norm1.num_groups, b.norm1.weight, b.norm1.bias, eps=1e-5))

    sizes = {"V2": (16, 16), "V4": (8, 8), "IT": (4, 4)}  # for a 64 px mini input
    outputs = {"V1": None, "V2": None, "V4": None, "IT": None}
    history = []
    for _ in range(steps):
        new = {"V1": block(model.V1, x, outputs["V1"], None)}
        for below, area in (("V1", "V2"), ("V2", "V4"), ("V4", "IT")):
            new[area] = block(getattr(model, area), outputs[below], outputs[area], sizes.get(area))
        outputs = new
        history.append(new)
    return history


def test_unrolling_matches_the_spec_equations_and_logits_decode_it_at_every_step():
    model = randomised("mini", seed=4)
    x = images(2, 64, seed=5)
    out = run(model, x)
    with torch.no_grad():
        reference = _reference_unrolling(model, x, steps=5)
    for step, maps in enumerate(reference):
        for area in AREAS:
            torch.testing.assert_close(out[area][step], maps[area].mean(dim=(2, 3)),
                                       rtol=1e-5, atol=1e-5)
        logits = model.decoder.linear(maps["IT"].mean(dim=(2, 3)))
        torch.testing.assert_close(out["logits"][step], logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["penult"], out["IT"], rtol=0, atol=0)
    torch.testing.assert_close(model(x), out["logits"][-1], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("scale, size, expected_it", [("mini", 96, (6, 6)), ("mini", 70, (5, 5)),
                                                      ("full", 192, (6, 6))])
def test_placeholders_follow_the_input_size(scale, size, expected_it):
    # the class runs at any size; a catalogue model takes only its card's (see check_input)
    model = CORnetRT(CONFIGS[scale]).eval()
    assert model.output_sizes(size, size)["IT"] == expected_it
    out = run(model, images(1, size), names=("IT", "logits"))
    assert out["logits"].shape == (5, 1, WIDTHS[scale]["logits"])


def test_official_placeholder_sizes_at_224():
    model = catalogue.build("cornet_rt", scale="full")
    assert model.output_sizes(224, 224) == {"V1": (56, 56), "V2": (28, 28), "V4": (14, 14),
                                            "IT": (7, 7)}


@pytest.mark.parametrize("scale", ["mini", "full"])
def test_official_layout_checkpoint_loads_strictly_and_reproduces_outputs(scale, tmp_path):
    source = randomised(scale, seed=11)
    path = tmp_path / "cornet_rt.pth"
    save_official(source, path)
    loaded = catalogue.load("cornet_rt", scale=scale, weights=path, seed=0)
    x = images(2, SIZES[scale], seed=6)
    expected, actual = run(source, x), run(loaded, x)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0)


def test_checkpoint_with_a_missing_key_is_refused_naming_it(tmp_path):
    state = {f"module.{k}": v for k, v in catalogue.build("cornet_rt").state_dict().items()}
    del state["module.V4.norm1.bias"]
    torch.save({"state_dict": state}, tmp_path / "missing.pth")
    with pytest.raises(AnalysisUtilsError, match="V4.norm1.bias"):
        catalogue.load("cornet_rt", weights=tmp_path / "missing.pth")


def test_checkpoint_with_a_misshapen_key_is_refused_naming_it(tmp_path):
    state = {f"module.{k}": v for k, v in catalogue.build("cornet_rt").state_dict().items()}
    state["module.IT.conv1.weight"] = torch.zeros(3, 3, 3, 3)
    torch.save({"state_dict": state}, tmp_path / "misshapen.pth")
    with pytest.raises(AnalysisUtilsError, match="IT.conv1.weight"):
        catalogue.load("cornet_rt", weights=tmp_path / "misshapen.pth")


def test_mini_checkpoint_is_refused_at_full_scale(tmp_path):
    save_official(catalogue.build("cornet_rt", scale="mini"), tmp_path / "mini.pth")
    with pytest.raises(AnalysisUtilsError, match="shape"):
        catalogue.load("cornet_rt", scale="full", weights=tmp_path / "mini.pth")


def test_unreadable_file_and_wrong_container_are_refused(tmp_path):
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    model = catalogue.build("cornet_rt")
    with pytest.raises(AnalysisUtilsError, match="Could not read"):
        load_checkpoint(model, broken)
    bare = tmp_path / "bare.pth"
    torch.save(model.state_dict(), bare)  # no 'state_dict' container
    with pytest.raises(AnalysisUtilsError, match="'state_dict'"):
        load_checkpoint(model, bare)


def test_bad_inputs_and_options_are_refused():
    model = catalogue.build("cornet_rt").eval()
    with pytest.raises(AnalysisUtilsError, match=r"\[N, 3, 64, 64\].*1 colour channel "):
        run(model, torch.zeros(1, 1, 64, 64))
    with pytest.raises(AnalysisUtilsError, match=r"\[N, 3, H, W\]"):  # the class's own check
        run(CORnetRT(CONFIGS["mini"]), torch.zeros(1, 1, 64, 64))
    with pytest.raises(AnalysisUtilsError, match="readout"):
        run(model, images(1, 64), names=("fc7",))
    with pytest.raises(AnalysisUtilsError, match="options"):
        catalogue.build("cornet_rt", width=2)


def test_card():
    card = catalogue.card("cornet_rt")
    assert (card.display_name, card.family, card.step_unit) == ("CORnet-RT", "CORnet", "t")
    assert (card.baseline, card.after, card.default_steps) == (4, 5, 5)
    assert card.headline_readout == "penult" and card.counterpart is None
    assert card.readouts == ("penult", "logits", "V1", "V2", "V4", "IT")
    assert card.colors == ("#1F77B4", "#1E90FF")
    assert card.official_weights.url.endswith("cornet_rt-933c001c.pth")
    assert card.official_weights.sha256 == "933c001c"
    assert (card.input_size("full"), card.preprocessing["full"].resize) == (224, 256)
    assert (card.input_size("mini"), card.preprocessing["mini"].resize) == (64, None)
