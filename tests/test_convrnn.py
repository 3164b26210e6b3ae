"""ConvRNN rgc_intermediate: shapes, timing of the one-step delays, presentation schedule, card,
cost, and the TF1 checkpoint converter (checked against files written by TensorFlow itself)."""

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from analysis_utils import catalogue
from analysis_utils.errors import AnalysisUtilsError
from analysis_utils.models import convrnn

MINI_WIDTHS = convrnn.CONFIGS["mini"].widths


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small convolutions on a shared 2-core machine run far faster on one thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def mini(**options):
    return catalogue.load("convrnn", "mini", weights="untrained", **options)


def images(n=2, size=64, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def run(model, x, names=None):
    with torch.no_grad():
        return model.readouts(x, names)


# ----------------------------------------------------------------------------- shapes, seeds


def test_mini_shapes_per_step_and_17_steps_by_default():
    model = mini()
    assert model.n_steps == 17 == catalogue.card("convrnn").default_steps
    out = run(model, images(3))
    assert set(out) == set(convrnn.READOUTS)
    assert out["logits"].shape == (17, 3, 100)
    assert out["penult"].shape == (17, 3, MINI_WIDTHS[-1])
    for name, width in zip(convrnn.CONV_NODES, MINI_WIDTHS):
        assert out[name].shape == (17, 3, width)
    assert torch.equal(out["penult"], out["conv10"])  # penult is conv10, pooled
    assert torch.isfinite(out["logits"]).all()


def test_full_shapes_and_official_parameter_counts():
    model = catalogue.load("convrnn", "full", weights="untrained", steps=2)
    out = run(model, torch.zeros(1, 3, 224, 224), ("logits", "penult", "conv1", "conv6"))
    assert out["logits"].shape == (2, 1, 1000)
    assert out["penult"].shape == (2, 1, 512)
    assert out["conv1"].shape == (2, 1, 64)
    assert out["conv6"].shape == (2, 1, 256)
    assert model.sizes == {"conv1": 56, "conv2": 56, "conv3": 56, "conv4": 28, "conv5": 28,
                           "conv6": 14, "conv7": 7, "conv8": 7, "conv9": 7, "conv10": 4}
    # the spec's per-node counts (docs/reference/models-cornet-rt-convrnn.md, B5)
    expected = {"conv1": 9_472, "conv2": 73_856, "conv3": 147_584, "conv4": 384_064,
                "conv5": 416_960, "conv6": 1_314_880, "conv7": 1_511_488, "conv8": 1_380_160,
                "conv9": 4_454_208, "conv10": 5_240_128}
    for name, count in expected.items():
        assert sum(p.numel() for p in getattr(model, name).parameters()) == count, name
    assert sum(p.numel() for p in model.readout.parameters()) == 513_000
    assert catalogue.parameter_count("convrnn", "full") == 15_445_800


def test_wrong_input_size_is_refused():
    with pytest.raises(AnalysisUtilsError, match=r"\[N, 3, 64, 64\]"):
        run(mini(), torch.zeros(1, 3, 224, 224))


def test_seeds_reproducible():
    a = catalogue.build("convrnn", "mini", seed=5)
    b = catalogue.build("convrnn", "mini", seed=5)
    c = catalogue.build("convrnn", "mini", seed=6)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert not torch.equal(a.conv5.cell.fb.weight, c.conv5.cell.fb.weight)
    x = images(2)
    assert torch.equal(run(a.eval(), x, "logits")["logits"], run(b.eval(), x, "logits")["logits"])


def test_mini_cost_uses_the_budget():
    model = mini()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.readouts(images(1), ("logits",))
    gflop = counter.get_total_flops() / 1e9
    assert 0.3 < gflop <= 0.4, gflop


# ----------------------------------------------------------------------------- timing


def first_difference(a: torch.Tensor, b: torch.Tensor) -> int | None:
    """The first 1-based step at which two [T, N, D] readouts differ (None if never)."""
    for index in range(a.shape[0]):
        if not torch.equal(a[index], b[index]):
            return index + 1
    return None


def test_image_reaches_conv_k_at_step_k_and_the_logits_at_step_11():
    model = mini()
    one, other = run(model, images(2, seed=1)), run(model, images(2, seed=2))
    for k, name in enumerate(convrnn.CONV_NODES, start=1):
        assert first_difference(one[name], other[name]) == k, name
    assert first_difference(one["logits"], other["logits"]) == 11
    assert first_difference(one["penult"], other["penult"]) == 10
    # at t = 1 everything but conv1 is bias-driven: not zero, and the same for every image
    assert one["logits"][0].abs().sum() > 0
    assert torch.equal(one["logits"][0, 0], one["logits"][0, 1])


def test_feedback_arrives_one_step_after_its_source_fires():
    """Zeroing the five top-down edges (the 1x1 feedback kernels) changes nothing at t = 1,
    when every feedback input is still the zero stand-in; from t = 2 on the sources' (bias-
    driven) outputs arrive, and the change then spreads one node per step."""
    assert convrnn.feedback_sources("conv6") == ("conv7", "conv9")
    assert convrnn.feedback_sources("conv7") == ("conv10",)
    assert convrnn.feedback_sources("conv4") == ()
    model = mini()
    x = images(2)
    with_feedback = run(model, x)
    for name in ("conv5", "conv6", "conv7", "conv9"):
        torch.nn.init.zeros_(getattr(model, name).cell.fb.weight)
    without = run(model, x)
    expected = {"conv1": None, "conv2": None, "conv3": None, "conv4": None, "conv5": 2,
                "conv6": 2, "conv7": 2, "conv8": 3, "conv9": 2, "conv10": 3, "penult": 3,
                "logits": 4}
    for name, step in expected.items():
        assert first_difference(with_feedback[name], without[name]) == step, name


# ----------------------------------------------------------------------------- presentation


def test_blank_value_after_the_image_is_switched_off():
    x = images(2)
    default = run(mini(), x, "conv1")["conv1"]
    constant = run(mini(presentation="constant"), x, "conv1")["conv1"]
    blank = run(mini(presentation="constant"), torch.full_like(x, 0.5), "conv1")["conv1"]
    # conv1 is memoryless, so its output at step t shows what it read at step t
    assert torch.equal(default[:12], constant[:12])
    for step in range(13, 18):
        assert torch.equal(default[step - 1], blank[0]), step
    assert not torch.equal(default[11], default[12])
    assert all(torch.equal(constant[i], constant[0]) for i in range(17))
    early = run(mini(image_off=5), x, "conv1")["conv1"]
    assert torch.equal(early[4], constant[4]) and torch.equal(early[5], blank[0])


@pytest.mark.parametrize("options, words", [
    ({"presentation": "flicker"}, "presentation"),
    ({"image_off": 0}, "image_off"),
    ({"presentation": "constant", "image_off": 12}, "image_off"),
    ({"blank": 0.0}, "blank"),
])
def test_bad_schedule_options_are_refused(options, words):
    with pytest.raises(AnalysisUtilsError, match=words):
        mini(**options)


# ----------------------------------------------------------------------------- the card


def test_card():
    card = catalogue.card("convrnn")
    assert "convrnn" in catalogue.names()
    assert (card.display_name, card.family, card.recurrence, card.mechanism) == (
        "ConvRNN", "ConvRNN", "within-layer + top-down", "gated")
    assert (card.loss_timing, card.counterpart, card.step_unit) == ("final step", None, "t")
    assert dict(card.states) == {"baseline": 16, "after": 17, "image_off": 12}
    assert card.headline_readout == "logits" and card.colors == ("#B33B72", "#BF6B99")
    assert card.input_size("full") == 224 and card.input_size("mini") == 64
    assert card.preprocessing["full"].resize == 256
    assert card.official_weights.url.endswith("rgc_intermediate/model.ckpt.index")
    assert card.official_weights.extra_files[0][0].endswith("model.ckpt.data-00000-of-00001")


def test_official_weights_without_hash_are_refused_before_download(tmp_path, monkeypatch):
    monkeypatch.setenv("ANALYSIS_UTILS_WEIGHTS", str(tmp_path))
    with pytest.raises(AnalysisUtilsError, match="sha256"):
        catalogue.load("convrnn", "full", weights="official", steps=1)
    assert not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------- official layout


def test_official_variable_names_and_shapes_at_full_scale():
    model = catalogue.build("convrnn", "full", steps=1)
    variables = {name: tuple(array.shape)
                 for name, array in convrnn.official_variables(model).items()}
    assert len(variables) + 4 == 148  # + the four frozen memory_decay scalars
    cell = "tnn_model/{}/ReciprocalGateCell/"
    assert variables["tnn_model/conv1/pre_0/weights_basenet"] == (7, 7, 3, 64)
    assert variables["tnn_model/conv6/pre_0/weights_basenet"] == (3, 3, 128, 256)
    assert variables[cell.format("conv4") + "cell/input_to_cell_weights"] == (2, 2, 128, 64)
    assert variables[cell.format("conv6") + "out/feedback_to_out_weights"] == (1, 1, 768, 256)
    assert variables[cell.format("conv9") + "out/residual_add_weights"] == (1, 1, 256, 512)
    assert variables[cell.format("conv7") + "cell/out_to_cell/depthwise_weights"] == (7, 7, 256, 1)
    assert variables[cell.format("conv7") + "out/gate/pointwise_weights"] == (1, 1, 64, 256)
    assert variables[cell.format("conv10") + "out/tau/bias"] == (512,)
    assert variables["tnn_model/imnetds/pre_3/weights"] == (512, 1000)
    assert cell.format("conv8") + "out/feedback_to_out_weights" not in variables
    assert cell.format("conv5") + "out/residual_add_weights" not in variables


def test_checkpoint_paths_and_missing_index_are_explained(tmp_path):
    prefix = tmp_path / "model.ckpt"
    for given in (prefix, f"{prefix}.index", f"{prefix}.data-00000-of-00001"):
        assert convrnn.checkpoint_prefix(given) == prefix
    with pytest.raises(AnalysisUtilsError, match="No TF checkpoint index"):
        convrnn.load_checkpoint(catalogue.build("convrnn", "mini"), prefix)
    (tmp_path / "model.ckpt.index").write_bytes(b"not a table" * 10)
    with pytest.raises(AnalysisUtilsError, match="not a readable TF checkpoint index"):
        convrnn.load_checkpoint(catalogue.build("convrnn", "mini"), prefix)


# ----------------------------------------------------------------------------- TF checkpoints


@pytest.fixture(scope="module")
def tf():
    tensorflow = pytest.importorskip(
        "tensorflow", reason="TensorFlow (test-only, extra 'tf') writes the official-format "
        "checkpoints these tests read; install it to run them")
    return tensorflow


def write_tf_checkpoint(tf, prefix, variables):
    """Write ``{name: array}`` with TensorFlow's own SaveV2 op (the op tf.compat.v1 Saver runs),
    so the files are in the real V2 bundle format under exactly the given names."""
    names = sorted(variables)
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(variables[name]) for name in names])


def official_file_variables(model):
    """The model's variables as an official checkpoint holds them: the weights, their momentum
    slots, the step counter and the frozen memory_decay scalars."""
    variables = convrnn.official_variables(model)
    for name in list(variables):
        variables[f"{name}/Momentum"] = np.full_like(variables[name], 0.25)
    variables["global_step"] = np.array(12345, dtype=np.int64)
    for node in ("conv1", "conv2", "conv3", "imnetds"):
        variables[f"tnn_model/{node}/memory_decay"] = np.zeros(1, dtype=np.float32)
    return variables


@pytest.mark.needs_tf
def test_tf_checkpoint_converts_and_reproduces_outputs(tf, tmp_path, monkeypatch):
    monkeypatch.setenv("ANALYSIS_UTILS_WEIGHTS", str(tmp_path / "cache"))
    source = catalogue.load("convrnn", "mini", weights="untrained", seed=11)
    prefix = tmp_path / "rgc" / "model.ckpt"
    prefix.parent.mkdir()
    write_tf_checkpoint(tf, prefix, official_file_variables(source))

    reader = convrnn.TFCheckpointReader(prefix)
    assert reader.entries["global_step"].shape == ()
    assert reader.entries["tnn_model/imnetds/pre_3/weights"].shape == (MINI_WIDTHS[-1], 100)

    loaded = catalogue.load("convrnn", "mini", weights=str(prefix), seed=99)
    for key, value in source.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    x = images(2)
    expected, actual = run(source, x), run(loaded, x)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0)

    # the conversion is cached by the checkpoint's sha256; a second load reads the cache
    cached = convrnn.converted_cache_path(convrnn.checkpoint_sha256(prefix))
    assert cached.is_file()

    def no_conversion(*args):
        raise AssertionError("the cached conversion was not used")

    monkeypatch.setattr(convrnn, "convert_checkpoint", no_conversion)
    again = catalogue.load("convrnn", "mini", weights=f"{prefix}.index", seed=98)
    assert torch.equal(again.conv9.cell.fb.weight, source.conv9.cell.fb.weight)


@pytest.mark.needs_tf
@pytest.mark.parametrize("change, words", [
    ("rename", "lacks the variable 'tnn_model/conv5/ReciprocalGateCell/out/tau/bias'"),
    ("reshape", "gives 'tnn_model/conv6/ReciprocalGateCell/out/feedback_to_out_weights' the "
                "shape"),
    ("extra", "has the variable 'tnn_model/conv8/ReciprocalGateCell/out/feedback_to_out_bias'"),
])
def test_wrong_names_and_shapes_are_refused(tf, tmp_path, monkeypatch, change, words):
    monkeypatch.setenv("ANALYSIS_UTILS_WEIGHTS", str(tmp_path / "cache"))
    variables = official_file_variables(catalogue.build("convrnn", "mini"))
    cell = "tnn_model/{}/ReciprocalGateCell/out/"
    if change == "rename":
        variables[cell.format("conv5") + "tau/biases"] = variables.pop(
            cell.format("conv5") + "tau/bias")
    elif change == "reshape":
        name = cell.format("conv6") + "feedback_to_out_weights"
        variables[name] = variables[name][:, :, :-1]
    else:
        variables[cell.format("conv8") + "feedback_to_out_bias"] = np.zeros(96, np.float32)
    prefix = tmp_path / "model.ckpt"
    write_tf_checkpoint(tf, prefix, variables)
    with pytest.raises(AnalysisUtilsError, match=words.replace("(", r"\(")):
        catalogue.load("convrnn", "mini", weights=str(prefix))
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.safetensors"))


@pytest.mark.needs_tf
def test_layers_match_tensorflow_ops(tf):
    """The TF conventions the conversion relies on, checked against TF's own ops: SAME padding
    (asymmetric for conv1's stride 2 and the 2x2 input-to-cell kernel), the depth-separable
    layout, the dense layout, the SAME max-pool on 7x7 and the aligned-corner resize."""
    torch.manual_seed(0)
    nhwc = lambda t: tf.constant(t.permute(0, 2, 3, 1).numpy())  # noqa: E731
    back = lambda a: torch.from_numpy(np.array(a)).permute(0, 3, 1, 2)  # noqa: E731

    conv = convrnn.SameConv2d(3, 5, 7, stride=2)
    x = torch.randn(2, 3, 22, 22)
    w = convrnn.to_official_layout(conv.weight, "conv")
    ref = tf.nn.conv2d(nhwc(x), w, strides=2, padding="SAME") + conv.bias.detach().numpy()
    torch.testing.assert_close(conv(x).detach(), back(ref), atol=1e-5, rtol=1e-5)

    conv = convrnn.SameConv2d(4, 3, 2)
    x = torch.randn(2, 4, 7, 7)
    w = convrnn.to_official_layout(conv.weight, "conv")
    ref = tf.nn.conv2d(nhwc(x), w, strides=1, padding="SAME") + conv.bias.detach().numpy()
    torch.testing.assert_close(conv(x).detach(), back(ref), atol=1e-5, rtol=1e-5)

    sep = convrnn.SeparableConv2d(6, 4, 7)
    x = torch.randn(2, 6, 7, 7)
    ref = tf.nn.separable_conv2d(
        nhwc(x), convrnn.to_official_layout(sep.dw.weight, "depthwise"),
        convrnn.to_official_layout(sep.pw.weight, "conv"), strides=[1, 1, 1, 1],
        padding="SAME") + sep.pw.bias.detach().numpy()
    torch.testing.assert_close(sep(x).detach(), back(ref), atol=1e-5, rtol=1e-5)

    fc = torch.nn.Linear(5, 3)
    v = torch.randn(2, 5)
    ref = tf.matmul(v.numpy(), convrnn.to_official_layout(fc.weight, "dense")) + fc.bias.detach()
    torch.testing.assert_close(fc(v).detach(), torch.from_numpy(ref.numpy()), atol=1e-5,
                               rtol=1e-5)

    x = torch.randn(2, 3, 7, 7)
    ref = tf.nn.max_pool2d(nhwc(x), 2, 2, "SAME")
    torch.testing.assert_close(torch.nn.functional.max_pool2d(x, 2, 2, ceil_mode=True),
                               back(ref))

    x = torch.randn(2, 3, 4, 4)
    ref = tf.compat.v1.image.resize_bilinear(nhwc(x), (14, 14), align_corners=True)
    torch.testing.assert_close(convrnn._resize(x, (14, 14)), back(ref), atol=1e-5, rtol=1e-5)


@pytest.mark.needs_tf
def test_cell_step_matches_the_spec_equations_written_in_tensorflow(tf):
    """One step of a cell with a residual projection and feedback (like conv6), computed with
    TF ops on the official-layout weights from the spec's equations (B5): both gates and both
    time constants read the previous c and h; h gates the input to c and c the input to h."""
    torch.manual_seed(1)
    config = convrnn.CONFIGS["full"]
    cell = convrnn.ReciprocalGatedCell(6, 8, 5, config)
    for parameter in cell.parameters():
        torch.nn.init.normal_(parameter, std=0.3)
    a, u, f = torch.randn(2, 8, 7, 7), torch.randn(2, 6, 7, 7), torch.randn(2, 5, 7, 7)
    c, h = torch.randn(2, config.cell_depth, 7, 7), torch.randn(2, 8, 7, 7)
    with torch.no_grad():
        new_c, new_h = cell(a, u, f, c, h)

    weights = {name: convrnn.to_official_layout(value, "depthwise" if ".dw." in name else
                                                "conv" if value.dim() == 4 else "vector")
               for name, value in cell.state_dict().items()}
    nhwc = lambda t: tf.constant(t.permute(0, 2, 3, 1).numpy())  # noqa: E731

    def conv(x, name):
        out = tf.nn.conv2d(x, weights[f"{name}.weight"], strides=1, padding="SAME")
        return out + weights[f"{name}.bias"] if f"{name}.bias" in weights else out

    def separable(x, name):
        out = tf.nn.separable_conv2d(x, weights[f"{name}.dw.weight"],
                                     weights[f"{name}.pw.weight"], strides=[1, 1, 1, 1],
                                     padding="SAME")
        return out + weights[f"{name}.pw.bias"]

    a_, u_, f_, c_, h_ = map(nhwc, (a, u, f, c, h))
    tau_c = convrnn.TAU_OFFSET + -convrnn.TAU_OFFSET * tf.sigmoid(separable(c_, "c_tau"))
    gate_c = convrnn.GATE_OFFSET + -convrnn.GATE_OFFSET * tf.tanh(separable(h_, "c_gate"))
    ref_c = tf.nn.elu(tau_c * c_ + gate_c * conv(a_, "in2cell"))
    out_input = conv(a_, "in2out") + conv(u_, "res_proj") + conv(f_, "fb")
    tau_h = convrnn.TAU_OFFSET + -convrnn.TAU_OFFSET * tf.sigmoid(separable(h_, "h_tau"))
    gate_h = convrnn.GATE_OFFSET + -convrnn.GATE_OFFSET * tf.tanh(separable(c_, "h_gate"))
    ref_h = tf.nn.elu(tau_h * h_ + gate_h * out_input)
    back = lambda x: torch.from_numpy(np.array(x)).permute(0, 3, 1, 2)  # noqa: E731
    torch.testing.assert_close(new_c, back(ref_c), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(new_h, back(ref_h), atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------- shortcuts


@pytest.mark.parametrize("options", [{}, {"presentation": "constant"}, {"image_off": 3}])
def test_shared_steps_give_the_plain_loops_features(options):
    """Batch-1 image-independent values and reused memoryless outputs change no number beyond
    the convolutions' batch-size-dependent float32 rounding (the plain loop itself differs by
    as much between batch sizes); conv1, computed from the same input, is bitwise equal."""
    model = mini(**options)
    x = images(3, seed=4)
    assert model.shared_steps
    shared = run(model, x)
    model.shared_steps = False
    plain = run(model, x)
    assert set(shared) == set(plain) == set(convrnn.READOUTS)
    for name in plain:
        assert shared[name].shape == plain[name].shape == (17, 3, shared[name].shape[2]), name
        torch.testing.assert_close(shared[name], plain[name], rtol=1e-5, atol=1e-6)
    assert torch.equal(shared["conv1"], plain["conv1"])
    # before the image reaches them, the shared rows are broadcast to every image
    assert torch.equal(shared["conv10"][:9, 0], shared["conv10"][:9, 2])
    assert not torch.equal(shared["conv10"][9, 0], shared["conv10"][9, 2])


@pytest.mark.parametrize("size", [8, 7, 2])
def test_node_pool_equals_ceil_mode_max_pool(size):
    """The 2x2 pool of even maps (four-pixel maximum) equals TF SAME = ceil-mode max-pool."""
    node = mini().conv2
    x = torch.randn(3, 4, size, size, generator=torch.Generator().manual_seed(2))
    expected = torch.nn.functional.max_pool2d(x, 2, 2, ceil_mode=True)
    assert torch.equal(node.pool(x), expected)
