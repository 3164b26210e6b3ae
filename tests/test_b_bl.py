"""B and BL: shapes and steps, time semantics, and the reader of the official Keras .h5 files."""

import h5py
import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from analysis_utils import catalogue, weights
from analysis_utils.errors import AnalysisUtilsError
from analysis_utils.models import b_bl
from analysis_utils.models.b_bl import BLConfig, BLNet

#: a small config for the converter tests: mixed kernel sizes, odd map sizes at 70 px input
#: (70 -> 35 -> 17 -> 8 -> 4 -> 2 -> 1), so 'same' padding and floor pooling both matter
TINY = BLConfig(channels=(4, 6, 8, 8, 10, 12, 16), kernels=(5, 3, 3, 3, 3, 3, 1),
                pool_before=(False,) + (True,) * 6, num_classes=7, input_size=70)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: on a busy shared CPU two threads make these small passes far slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _randomised(model: BLNet, seed: int) -> BLNet:
    """``model`` with every weight and BatchNorm statistic random (not the Keras init)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if key.endswith("num_batches_tracked"):
                continue
            values = torch.randn(tensor.shape, generator=generator)
            if key.endswith("running_var"):
                values = values.abs() + 0.5
            elif key.endswith(".weight") and tensor.dim() == 4:
                fan_in = tensor[0].numel()
                values = values / fan_in ** 0.5
            tensor.copy_(values)
    return model.eval()


def _outputs(model, x):
    with torch.inference_mode():
        return model.readouts(x)


@pytest.mark.parametrize("name, steps, widths", [
    ("bl", 8, (8, 14, 24, 48, 96, 192, 384)),
    ("b", 1, (8, 14, 24, 48, 96, 192, 384)),
])
def test_mini_shapes_per_step(name, steps, widths):
    card = catalogue.card(name)
    assert card.default_steps == steps
    model = catalogue.load(name, scale="mini", weights="untrained")
    out = _outputs(model, torch.randn(3, 3, 64, 64))
    assert out["logits"].shape == (steps, 3, 100)
    assert out["penult"].shape == (steps, 3, widths[-1])
    for n, width in enumerate(widths):
        assert out[f"layer{n + 1}"].shape == (steps, 3, width)
    torch.testing.assert_close(out["penult"], out["layer7"], rtol=0, atol=0)


def test_full_shapes_per_step():
    bl = catalogue.load("bl", scale="full", weights="untrained", steps=2)
    out = _outputs(bl, torch.randn(1, 3, 128, 128))
    assert out["logits"].shape == (2, 1, 1000)
    assert out["penult"].shape == (2, 1, 2048)
    assert out["layer1"].shape == (2, 1, 96)
    assert catalogue.load("bl", scale="full", weights="untrained").n_steps == 8
    b = catalogue.load("b", scale="full", weights="untrained")
    out = _outputs(b, torch.randn(1, 3, 128, 128))
    assert out["logits"].shape == (1, 1, 1000)
    assert out["layer6"].shape == (1, 1, 1024)


def test_full_parameter_counts_match_the_notes():
    # trainable values of the published files (notes, sections 2 and 3.3), ImageNet, K = 1000
    assert catalogue.parameter_count("bl", "full") == 28_870_920
    assert catalogue.parameter_count("b", "full") == 11_046_280 - 8_512


def test_mini_bl_fits_the_compute_budget():
    model = catalogue.load("bl", scale="mini", weights="untrained")
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model.readouts(torch.randn(2, 3, 64, 64))
    assert counter.get_total_flops() / 2 / 1e9 <= 0.2


def test_seeds_are_reproducible():
    x = torch.randn(2, 3, 64, 64)
    first = _outputs(catalogue.load("bl", weights="untrained", seed=5), x)["logits"]
    again = _outputs(catalogue.load("bl", weights="untrained", seed=5), x)["logits"]
    other = _outputs(catalogue.load("bl", weights="untrained", seed=6), x)["logits"]
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.allclose(first, other)


def test_steps_out_of_range_are_refused():
    with pytest.raises(AnalysisUtilsError, match="8 steps only.*between 1 and 8"):
        catalogue.build("bl", steps=9)
    with pytest.raises(AnalysisUtilsError, match="feedforward.*between 1 and 1"):
        catalogue.build("b", steps=2)
    with pytest.raises(AnalysisUtilsError, match="no build options"):
        catalogue.build("bl", cumulative=True)


def test_no_lateral_input_at_the_first_step():
    model = _randomised(BLNet(TINY, n_steps=4, lateral=True), seed=1)
    x = torch.randn(2, 3, 70, 70)
    before = _outputs(model, x)
    with torch.no_grad():
        for layer in model.layers:
            layer.lateral.weight.zero_()
    after = _outputs(model, x)
    for name in ("layer1", "layer4", "logits"):
        torch.testing.assert_close(after[name][0], before[name][0], rtol=0, atol=0)
        for t in range(1, 4):
            assert not torch.allclose(after[name][t], before[name][t]), (name, t + 1)


def test_b_is_bl_at_the_first_step():
    bl = _randomised(BLNet(TINY, n_steps=3, lateral=True), seed=2)
    b = BLNet(TINY, n_steps=1, lateral=False).eval()
    shared = {key: value for key, value in bl.state_dict().items()
              if ".lateral." not in key and (not key.startswith("norms.") or
                                             key.startswith("norms.0."))}
    b.load_state_dict(shared, strict=True)
    x = torch.randn(2, 3, 70, 70)
    torch.testing.assert_close(_outputs(b, x)["logits"][0], _outputs(bl, x)["logits"][0],
                               rtol=0, atol=0)


def test_each_step_uses_its_own_batchnorm():
    model = _randomised(BLNet(TINY, n_steps=5, lateral=True), seed=3)
    x = torch.randn(2, 3, 70, 70)
    before = _outputs(model, x)
    with torch.no_grad():
        model.norms[2][3].running_mean += 0.7  # step t=3, layer 4
    after = _outputs(model, x)
    for name in ("layer4", "logits"):
        torch.testing.assert_close(after[name][:2], before[name][:2], rtol=0, atol=0)
        for t in range(2, 5):
            assert not torch.allclose(after[name][t], before[name][t]), (name, t + 1)
    # step 3's other layers below layer 4 are untouched too
    torch.testing.assert_close(after["layer3"][2], before["layer3"][2], rtol=0, atol=0)


# ----------------------------------------------------------------------------- Keras .h5 files


def _keras_layer_list(lateral: bool, steps: int):
    """[(layer name, [(variable kind, state key, transform)])] in the Keras model's order,
    including the parameter-free layers the official files also list."""
    bn_kinds = (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"),
                ("moving_variance", "running_var"))
    layers = [("input_1", [])]
    if lateral:
        for n in range(7):
            layers.append((f"RCL_{n}_BConv", [("kernel", f"layers.{n}.bottom_up.weight", "conv")]))
            layers.append((f"RCL_{n}_LConv", [("kernel", f"layers.{n}.lateral.weight", "conv")]))
        for t in range(steps):
            for n in range(7):
                if n > 0:
                    layers.append((f"MaxPool_Layer_{n}_Time_{t}", []))
                if t > 0:
                    layers.append((f"RCL_{n}_ConvSum_Time_{t}", []))
                norm_variables = [(kind, f"norms.{t}.{n}.{field}", None)
                                  for kind, field in bn_kinds]
                layers.append((f"BatchNorm_Layer_{n}_Time_{t}", norm_variables))
                layers.append((f"ReLU_Layer_{n}_Time_{t}", []))
            layers.append((f"GlobalAvgPool_Time_{t}", []))
        layers.append(("ReadoutDense", [("kernel", "readout.weight", "dense"),
                                        ("bias", "readout.bias", None)]))
        layers += [(f"Sotfmax_Time_{t}", []) for t in range(steps)]
    else:
        for n in range(7):
            if n > 0:
                layers.append((f"MaxPool_Layer_{n}", []))
            layers.append((f"Conv_Layer_{n}", [("kernel", f"layers.{n}.bottom_up.weight", "conv")]))
            layers.append((f"BatchNorm_Layer_{n}",
                           [(kind, f"norms.0.{n}.{field}", None) for kind, field in bn_kinds]))
            layers.append((f"ReLU_Layer_{n}", []))
        layers += [("GlobalAvgPool", []),
                   ("ReadoutDense", [("kernel", "readout.weight", "dense"),
                                     ("bias", "readout.bias", None)]),
                   ("Softmax", [])]
    return layers


def _write_official_layout(model: BLNet, path, wrapper: bool = False):
    """Write ``model`` as tf.keras 1.x ``save_weights`` does: root ``layer_names`` listing every
    layer, one group per layer with a ``weight_names`` attribute, arrays at
    ``/<layer>/<layer>/<var>:0``, kernels HWIO and the dense kernel (in, out)."""
    state = model.state_dict()
    with h5py.File(path, "w") as handle:
        root = handle.create_group("model_weights") if wrapper else handle
        layers = _keras_layer_list(model.lateral, len(model.norms))
        root.attrs["layer_names"] = [name.encode("utf8") for name, _ in layers]
        root.attrs["backend"] = b"tensorflow"
        root.attrs["keras_version"] = b"2.2.4-tf"
        for name, variables in layers:
            group = root.create_group(name)
            weight_names = [f"{name}/{kind}:0".encode() for kind, _, _ in variables]
            # a parameter-free layer gets an empty (float) array, as Keras writes it
            group.attrs["weight_names"] = np.asarray(weight_names) if weight_names else np.zeros(0)
            for (_, key, transform), weight_name in zip(variables, weight_names):
                value = state[key].numpy()
                if transform == "conv":
                    value = value.transpose(2, 3, 1, 0)
                elif transform == "dense":
                    value = value.T
                group.create_dataset(weight_name.decode(), data=value)


@pytest.mark.parametrize("lateral", [True, False])
@pytest.mark.parametrize("wrapper", [False, True])
def test_official_layout_loads_and_reproduces_outputs(tmp_path, lateral, wrapper):
    source = _randomised(BLNet(TINY, n_steps=8 if lateral else 1, lateral=lateral), seed=4)
    path = tmp_path / "weights.h5"
    _write_official_layout(source, path, wrapper=wrapper)
    target = BLNet(TINY, n_steps=8 if lateral else 1, lateral=lateral).eval()
    b_bl.load_checkpoint(target, path)
    x = torch.randn(2, 3, 70, 70)
    expected, actual = _outputs(source, x), _outputs(target, x)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0)


def test_catalogue_load_reads_an_h5_path(tmp_path):
    source = _randomised(catalogue.build("bl", scale="mini", seed=1), seed=5)
    path = tmp_path / "bl_mini.h5"
    _write_official_layout(source, path)
    model = catalogue.load("bl", scale="mini", weights=path, steps=3)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(_outputs(model, x)["logits"], _outputs(source, x)["logits"][:3],
                               rtol=0, atol=0)
    assert model.weights_id["kind"] == "file"


def test_our_writer_round_trips(tmp_path):
    source = _randomised(BLNet(TINY, n_steps=8, lateral=True), seed=6)
    b_bl.write_keras_h5(source, tmp_path / "ours.h5")
    target = BLNet(TINY, n_steps=8, lateral=True)
    b_bl.load_checkpoint(target, tmp_path / "ours.h5")
    for key, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value, rtol=0, atol=0)


def _official_file(tmp_path, lateral=True):
    path = tmp_path / "weights.h5"
    model = BLNet(TINY, n_steps=8 if lateral else 1, lateral=lateral)
    _write_official_layout(model, path)
    return path


def test_a_misshapen_array_is_refused_by_name(tmp_path):
    path = _official_file(tmp_path)
    with h5py.File(path, "a") as handle:
        del handle["RCL_3_LConv/RCL_3_LConv/kernel:0"]
        handle["RCL_3_LConv"].create_dataset("RCL_3_LConv/kernel:0", data=np.zeros((3, 3, 8, 9)))
    with pytest.raises(AnalysisUtilsError, match=r"RCL_3_LConv/kernel the shape \(3, 3, 8, 9\)"):
        b_bl.load_checkpoint(BLNet(TINY, 8, lateral=True), path)


def test_an_unknown_layer_is_refused_by_name(tmp_path):
    path = _official_file(tmp_path)
    with h5py.File(path, "a") as handle:
        names = [n.decode() if isinstance(n, bytes) else n for n in handle.attrs["layer_names"]]
        names[names.index("BatchNorm_Layer_2_Time_5")] = "BatchNorm_Layer_2_Time_9"
        handle.attrs["layer_names"] = [n.encode() for n in names]
        handle.move("BatchNorm_Layer_2_Time_5", "BatchNorm_Layer_2_Time_9")
    with pytest.raises(AnalysisUtilsError, match="'BatchNorm_Layer_2_Time_9'"):
        b_bl.load_checkpoint(BLNet(TINY, 8, lateral=True), path)


def test_a_missing_variable_is_refused_by_name(tmp_path):
    path = _official_file(tmp_path)
    with h5py.File(path, "a") as handle:
        group = handle["ReadoutDense"]
        group.attrs["weight_names"] = [b"ReadoutDense/kernel:0"]
        del group["ReadoutDense/bias:0"]
    with pytest.raises(AnalysisUtilsError, match="lacks the variable 'bias' of layer 'Readout"):
        b_bl.load_checkpoint(BLNet(TINY, 8, lateral=True), path)


def test_the_wrong_family_or_format_is_refused(tmp_path):
    b_file = _official_file(tmp_path, lateral=False)
    with pytest.raises(AnalysisUtilsError, match="'Conv_Layer_0'.*does not have"):
        b_bl.load_checkpoint(BLNet(TINY, 8, lateral=True), b_file)
    not_h5 = tmp_path / "bl.h5"
    not_h5.write_bytes(b"<html>not found</html>")
    with pytest.raises(AnalysisUtilsError, match="Could not open .* as an HDF5 file"):
        b_bl.load_checkpoint(BLNet(TINY, 8, lateral=True), not_h5)
    with h5py.File(tmp_path / "empty.h5", "w"):
        pass
    with pytest.raises(AnalysisUtilsError, match="no 'layer_names' attribute"):
        b_bl.load_checkpoint(BLNet(TINY, 8, lateral=True), tmp_path / "empty.h5")


@pytest.mark.parametrize("name", ["bl", "b"])
def test_official_weights_without_a_hash_are_refused_before_download(tmp_path, name):
    spec = catalogue.card(name).official_weights
    assert spec.url.startswith("https://osf.io/download/") and spec.file_format == "keras_h5"
    with pytest.raises(AnalysisUtilsError, match="No sha256 is recorded .*weights=<path"):
        weights.fetch(spec, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- real Keras


def _keras_bl(config: BLConfig, steps: int):
    """BL in Keras 3, built from the notes' description (layer names as in rcnn-sat)."""
    import keras

    image = keras.Input((config.input_size, config.input_size, 3))
    layers = keras.layers
    b_convs = [layers.Conv2D(c, k, padding="same", use_bias=False, name=f"RCL_{n}_BConv")
               for n, (c, k) in enumerate(zip(config.channels, config.kernels))]
    l_convs = [layers.Conv2D(c, k, padding="same", use_bias=False, name=f"RCL_{n}_LConv")
               for n, (c, k) in enumerate(zip(config.channels, config.kernels))]
    readout = layers.Dense(config.num_classes, name="ReadoutDense")
    previous, outputs = [None] * 7, []
    for t in range(steps):
        below = image
        for n in range(7):
            if config.pool_before[n]:
                below = layers.MaxPooling2D(2, name=f"MaxPool_Layer_{n}_Time_{t}")(below)
            drive = b_convs[n](below)
            if t > 0:
                lateral = l_convs[n](previous[n])
                drive = layers.Add(name=f"RCL_{n}_ConvSum_Time_{t}")([drive, lateral])
            drive = layers.BatchNormalization(name=f"BatchNorm_Layer_{n}_Time_{t}")(drive)
            below = previous[n] = layers.Activation("relu", name=f"ReLU_Layer_{n}_Time_{t}")(drive)
        outputs.append(readout(layers.GlobalAveragePooling2D(name=f"GlobalAvgPool_Time_{t}")(below)))
    return keras.Model(image, outputs)


@pytest.mark.needs_tf
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_keras_model_saved_by_keras_matches(tmp_path):
    pytest.importorskip("keras")
    pytest.importorskip("tensorflow")
    import keras

    steps = b_bl.BL_STEPS
    config = TINY
    model = _keras_bl(config, steps)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        values = []
        for weight in layer.get_weights():
            value = rng.standard_normal(weight.shape).astype("float32")
            if weight.ndim == 4:
                value /= np.sqrt(np.prod(weight.shape[:3]))
            values.append(value)
        if isinstance(layer, keras.layers.BatchNormalization):
            values[3] = np.abs(values[3]) + 0.5  # moving variance
        layer.set_weights(values)
    path = tmp_path / "keras_bl.h5"
    model.save(path)  # Keras' legacy HDF5 writer: /model_weights/<layer>/<layer>/<var>
    x = rng.uniform(-1, 1, (2, config.input_size, config.input_size, 3)).astype("float32")
    expected = np.stack([np.asarray(o) for o in model(x, training=False)])

    torch_model = BLNet(config, n_steps=steps, lateral=True).eval()
    b_bl.load_checkpoint(torch_model, path)
    actual = _outputs(torch_model, torch.from_numpy(x).permute(0, 3, 1, 2))["logits"]
    assert actual.shape == expected.shape == (steps, 2, config.num_classes)
    assert expected.std() > 0.1  # non-trivial logits, so the comparison means something
    np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size", [(8, 8), (7, 9), (2, 3)])
def test_max_pool_2x2_equals_torch_max_pool_with_floor(size):
    x = torch.randn(3, 5, *size, generator=torch.Generator().manual_seed(1))
    x[0, 0, 0, 0] = float("nan")
    pooled = b_bl.max_pool_2x2(x)
    expected = torch.nn.functional.max_pool2d(x, 2, 2)
    assert pooled.shape == expected.shape
    assert torch.equal(pooled.nan_to_num(nan=-99.0), expected.nan_to_num(nan=-99.0))
    assert pooled[0, 0, 0, 0].isnan()
