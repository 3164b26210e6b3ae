"""B and BL (Spoerer et al. 2020): a seven-layer convnet and its lateral-recurrent version.

Written from the specification in ``docs/reference/models-bl-b.md``, not from the original
Keras code (cjspoerer/rcnn-sat). One class, :class:`BLNet`, is built from a per-scale
:class:`BLConfig`; ``lateral=True`` gives BL, ``lateral=False`` gives its feedforward
counterpart B. Each layer ``n`` (0-based in the code and in the Keras names, ``layer{n+1}`` for
a reader) at step ``t`` computes::

    z[t][n] = W_B[n] * P[n](a[t][n-1])  +  W_L[n] * a[t-1][n]     (no lateral term at t = 1)
    a[t][n] = ReLU(BN[t][n](z[t][n]))

with ``a[t][-1]`` the image (it enters at every step), ``P[n]`` a 2x2 max-pool (stride 2, Keras
'valid' = floor) where the config asks for one (before layers 1-6 in the original), bottom-up
and lateral convolutions with 'same' padding and no bias, shared across steps, and a separate
BatchNorm (eps 1e-3, as Keras) for every layer and step. The readout, global average pooling and
one dense layer with bias, is shared by all steps, so logits exist at every step. The bottom-up
input of a layer is the same step's output of the layer below, so each step is a full
bottom-up sweep; the first layer's bottom-up convolution of the static image is computed once
and reused, which gives the same numbers as recomputing it.

Scales: ``full`` is the published architecture (128 px, 1000 classes, 8 steps); ``mini`` is the
same class for 64x64 input and 100 classes, narrower and with 3x3 kernels (see ``CONFIGS``).

Official weights are Keras HDF5 files (tf.keras ``save_weights``); :func:`load_checkpoint` reads
them with h5py, without TensorFlow, keyed on layer name and variable kind (notes, section 6.1).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import preprocess
from ..catalogue import ModelCard, register
from ..errors import AnalysisUtilsError
from ..weights import OfficialWeights
from .base import StepRecorder, TimeResolvedModel, global_average, load_state_dict_strict

N_LAYERS = 7
LAYER_READOUTS = tuple(f"layer{n + 1}" for n in range(N_LAYERS))
READOUTS = ("penult", "logits") + LAYER_READOUTS

#: BL was trained with 8 steps and has BatchNorm statistics for those 8 steps only
BL_STEPS = 8

BN_EPS = 1e-3  # Keras' BatchNormalization default
BN_MOMENTUM = 0.01  # Keras momentum 0.99 (weight of the old running value) in PyTorch's convention


@dataclass(frozen=True)
class BLConfig:
    """Everything that differs between scales: one entry per layer, and the classifier."""

    channels: tuple[int, ...]
    kernels: tuple[int, ...]  # odd, so Keras 'same' padding is symmetric (k // 2)
    pool_before: tuple[bool, ...]
    num_classes: int
    input_size: int  # the size the model was designed (and trained) for; others also run

    def __post_init__(self):
        if not len(self.channels) == len(self.kernels) == len(self.pool_before) == N_LAYERS:
            raise ValueError(f"A BLConfig needs {N_LAYERS} channels, kernels and pool flags.")
        if any(k % 2 == 0 for k in self.kernels):
            raise ValueError("Kernel sizes must be odd so that 'same' padding is symmetric.")


CONFIGS = {
    # the published architecture (notes, sections 2 and 3): maps 128, 64, 32, 16, 8, 4, 2
    "full": BLConfig(
        channels=(96, 128, 192, 256, 512, 1024, 2048),
        kernels=(7, 5, 3, 3, 3, 3, 1),
        pool_before=(False, True, True, True, True, True, True),
        num_classes=1000,
        input_size=128,
    ),
    # 64 px, 100 classes: the same pooling (maps 64, 32, 16, 8, 4, 2, 1), 3x3 kernels below the
    # 1x1 top layer, channels growing as the maps shrink; BL costs 0.199 GFLOP per image over
    # its 8 steps (the laterals are most of it), B 0.0096 (benchmarks/model_cost.py)
    "mini": BLConfig(
        channels=(8, 14, 24, 48, 96, 192, 384),
        kernels=(3, 3, 3, 3, 3, 3, 1),
        pool_before=(False, True, True, True, True, True, True),
        num_classes=100,
        input_size=64,
    ),
}


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """2x2 max-pool with stride 2, 'valid' (an odd last row or column is dropped), as
    ``nn.MaxPool2d(2, 2)``: the maximum of each window's four pixels, without pooling indices
    (several times faster on CPU, and exactly equal)."""
    height, width = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    x = x[..., :height, :width]
    return torch.maximum(torch.maximum(x[..., 0::2, 0::2], x[..., 0::2, 1::2]),
                         torch.maximum(x[..., 1::2, 0::2], x[..., 1::2, 1::2]))


class BLLayer(nn.Module):
    """One layer's convolutions: bottom-up, and lateral for BL (both without bias)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, lateral: bool):
        super().__init__()
        padding = kernel_size // 2
        self.bottom_up = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding,
                                   bias=False)
        self.lateral = (nn.Conv2d(out_channels, out_channels, kernel_size, padding=padding,
                                  bias=False) if lateral else None)


class BLNet(TimeResolvedModel):
    """BL (``lateral=True``, up to 8 steps) or B (``lateral=False``, one step) at one scale.

    State-dict keys: ``layers.{n}.bottom_up.weight``, ``layers.{n}.lateral.weight`` (BL),
    ``norms.{t}.{n}.*`` (step ``t`` and layer ``n``, both 0-based) and ``readout.*``.
    """

    def __init__(self, config: BLConfig, n_steps: int, lateral: bool):
        norm_steps = BL_STEPS if lateral else 1
        if not 1 <= int(n_steps) <= norm_steps:
            what = ("BL has BatchNorm statistics for 8 steps only" if lateral
                    else "B is feedforward and has one step")
            raise AnalysisUtilsError(
                f"{what}; got steps={n_steps!r}, so pass steps between 1 and {norm_steps}."
            )
        super().__init__(n_steps, READOUTS)
        self.config = config
        self.lateral = lateral
        in_channels = (3,) + config.channels[:-1]
        self.layers = nn.ModuleList(
            BLLayer(c_in, c_out, k, lateral)
            for c_in, c_out, k in zip(in_channels, config.channels, config.kernels)
        )
        self.norms = nn.ModuleList(
            nn.ModuleList(nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)
                          for c in config.channels)
            for _ in range(norm_steps)
        )
        self.pool = max_pool_2x2  # Keras MaxPool2D(2): stride 2, 'valid' (floor)
        self.readout = nn.Linear(config.channels[-1], config.num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Keras defaults: Glorot-uniform kernels, zero bias, BN gamma 1, beta 0, mean 0, var 1."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_parameters()

    def _readouts(self, x: torch.Tensor, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
        recorder = StepRecorder(names)
        first = self.pool(x) if self.config.pool_before[0] else x
        image_drive = self.layers[0].bottom_up(first)  # the image is static: compute once
        previous: list[torch.Tensor | None] = [None] * N_LAYERS
        for t in range(self.n_steps):
            below = None
            for n, layer in enumerate(self.layers):
                if n == 0:
                    drive = image_drive
                else:
                    source = self.pool(below) if self.config.pool_before[n] else below
                    drive = layer.bottom_up(source)
                if previous[n] is not None:  # no lateral input at the first step
                    drive = drive + layer.lateral(previous[n])
                below = torch.relu(self.norms[t][n](drive))
                recorder.add(LAYER_READOUTS[n], below)
                previous[n] = below if self.lateral else None
            pooled = global_average(below)
            recorder.add("penult", pooled)
            if recorder.wants("logits"):
                recorder.add("logits", self.readout(pooled))
        return recorder.stacked()


# ----------------------------------------------------------------------------- Keras .h5 reader


def keras_variables(model: BLNet) -> dict[tuple[str, str], tuple[str, tuple[int, ...]]]:
    """``{(Keras layer name, variable kind): (state-dict key, shape in the Keras file)}``.

    Names follow rcnn-sat: ``RCL_{n}_BConv``/``RCL_{n}_LConv`` and
    ``BatchNorm_Layer_{n}_Time_{t}`` for BL, ``Conv_Layer_{n}`` and ``BatchNorm_Layer_{n}`` for
    B, ``ReadoutDense`` for both; kernels are HWIO, the dense kernel is (in, out).
    """
    variables = {}
    for n, layer in enumerate(model.layers):
        convs = ([(f"RCL_{n}_BConv", "bottom_up"), (f"RCL_{n}_LConv", "lateral")]
                 if model.lateral else [(f"Conv_Layer_{n}", "bottom_up")])
        for keras_name, attribute in convs:
            out_ch, in_ch, kh, kw = getattr(layer, attribute).weight.shape
            variables[keras_name, "kernel"] = (f"layers.{n}.{attribute}.weight",
                                               (kh, kw, in_ch, out_ch))
    for t, norms in enumerate(model.norms):
        for n, norm in enumerate(norms):
            keras_name = (f"BatchNorm_Layer_{n}_Time_{t}" if model.lateral
                          else f"BatchNorm_Layer_{n}")
            for kind, field in (("gamma", "weight"), ("beta", "bias"),
                                ("moving_mean", "running_mean"),
                                ("moving_variance", "running_var")):
                variables[keras_name, kind] = (f"norms.{t}.{n}.{field}", (norm.num_features,))
    classes, features = model.readout.weight.shape
    variables["ReadoutDense", "kernel"] = ("readout.weight", (features, classes))
    variables["ReadoutDense", "bias"] = ("readout.bias", (classes,))
    return variables


def _text_list(values) -> list[str]:
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in np.atleast_1d(values)]


def _attribute_list(group, name: str) -> list[str] | None:
    """A Keras list attribute, also when Keras split it into ``name0``, ``name1``, ... chunks."""
    if name in group.attrs:
        return _text_list(group.attrs[name])
    if f"{name}0" not in group.attrs:
        return None
    values, chunk = [], 0
    while f"{name}{chunk}" in group.attrs:
        values += _text_list(group.attrs[f"{name}{chunk}"])
        chunk += 1
    return values


def _variable_kind(weight_name: str) -> str:
    """``'RCL_0_BConv/kernel:0'`` (TF1) or ``'RCL_0_BConv/kernel'`` (Keras 3) -> ``'kernel'``."""
    last = weight_name.split("/")[-1]
    return re.sub(r":\d+$", "", last)


def read_keras_h5(model: BLNet, path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of ``model`` read from a Keras weights file, every name and shape checked."""
    import h5py

    path = Path(path)
    family = "BL" if model.lateral else "B"
    expected = keras_variables(model)
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise AnalysisUtilsError(
            f"Could not open {path} as an HDF5 file ({exc}); {family} weights must be the Keras "
            ".h5 file from OSF (or a .safetensors state dict of this package)."
        ) from exc
    state: dict[str, torch.Tensor] = {}
    with handle:
        root = handle["model_weights"] if "model_weights" in handle else handle
        layer_names = _attribute_list(root, "layer_names")
        if layer_names is None:
            raise AnalysisUtilsError(
                f"{path} has no 'layer_names' attribute, so it is not a Keras HDF5 weights file "
                "in the tf.keras save_weights layout; use the official .h5 file from OSF."
            )
        for layer_name in layer_names:
            if layer_name not in root:
                raise AnalysisUtilsError(
                    f"{path} lists the layer {layer_name!r} but has no group of that name; the "
                    "file is damaged or incomplete: download it again."
                )
            group = root[layer_name]
            for weight_name in _attribute_list(group, "weight_names") or []:
                kind = _variable_kind(weight_name)
                if (layer_name, kind) not in expected:
                    raise AnalysisUtilsError(
                        f"{path} holds the variable {weight_name!r} of layer {layer_name!r}, which "
                        f"the {family} model at this scale does not have; check that the file is "
                        f"the {family} file (not {'B' if model.lateral else 'BL'}) and the scale."
                    )
                key, shape = expected[layer_name, kind]
                if key in state:
                    raise AnalysisUtilsError(
                        f"{path} holds the {kind!r} of layer {layer_name!r} twice; the file is "
                        "not a plain save_weights file of this model."
                    )
                if weight_name not in group:
                    raise AnalysisUtilsError(
                        f"{path} names the variable {weight_name!r} in layer {layer_name!r} but "
                        "stores no array under that name; the file is damaged: download it again."
                    )
                value = np.asarray(group[weight_name], dtype=np.float32)
                if value.shape != shape:
                    raise AnalysisUtilsError(
                        f"{path} gives {layer_name}/{kind} the shape {value.shape}, but the "
                        f"{family} model at this scale needs {shape}; check that the scale "
                        "('mini' or 'full') and the number of classes match the file."
                    )
                state[key] = torch.from_numpy(_to_torch_layout(value, kind, layer_name))
    missing = [names for names, (key, _) in expected.items() if key not in state]
    if missing:
        layer_name, kind = missing[0]
        raise AnalysisUtilsError(
            f"{path} lacks the variable {kind!r} of layer {layer_name!r} ({len(missing)} of "
            f"{len(expected)} variables missing); it is not a complete {family} weights file."
        )
    return state


def _to_torch_layout(value: np.ndarray, kind: str, layer_name: str) -> np.ndarray:
    if kind == "kernel" and value.ndim == 4:  # conv: HWIO -> OIHW, no flip (both cross-correlate)
        return np.ascontiguousarray(value.transpose(3, 2, 0, 1))
    if kind == "kernel" and layer_name == "ReadoutDense":  # dense: (in, out) -> (out, in)
        return np.ascontiguousarray(value.T)
    return value


def load_checkpoint(model: BLNet, path: str | Path) -> None:
    """Load an official Keras ``.h5`` weights file (or our own Keras-layout file) into ``model``."""
    state = read_keras_h5(model, path)
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            state[key] = value.clone()
    load_state_dict_strict(model, state, str(path))


def write_keras_h5(model: BLNet, path: str | Path) -> None:
    """Write ``model`` in the tf.keras 1.x ``save_weights`` layout (as the official files).

    Only the layers with weights are written (the official files also list the parameter-free
    layers; readers skip them). Useful to hand our weights to the original Keras code.
    """
    import h5py

    state = model.state_dict()
    by_layer: dict[str, list[tuple[str, str]]] = {}
    for (layer_name, kind), (key, _) in keras_variables(model).items():
        by_layer.setdefault(layer_name, []).append((kind, key))
    with h5py.File(path, "w") as handle:
        handle.attrs["layer_names"] = [name.encode("utf8") for name in by_layer]
        handle.attrs["backend"] = b"tensorflow"
        handle.attrs["keras_version"] = b"2.2.4-tf"
        for layer_name, variables in by_layer.items():
            group = handle.create_group(layer_name)
            weight_names = [f"{layer_name}/{kind}:0" for kind, _ in variables]
            group.attrs["weight_names"] = [name.encode("utf8") for name in weight_names]
            for weight_name, (kind, key) in zip(weight_names, variables):
                value = state[key].detach().cpu().numpy()
                if kind == "kernel" and value.ndim == 4:
                    value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
                elif kind == "kernel":
                    value = value.T
                group.create_dataset(weight_name, data=np.ascontiguousarray(value))


# ----------------------------------------------------------------------------- catalogue


def build(scale: str, steps: int, lateral: bool, **options) -> BLNet:
    if options:
        raise AnalysisUtilsError(
            f"B and BL take no build options, got {sorted(options)}; pass only scale, steps and "
            "seed."
        )
    return BLNet(CONFIGS[scale], n_steps=steps, lateral=lateral)


def build_bl(scale: str, steps: int, **options) -> BLNet:
    return build(scale, steps, lateral=True, **options)


def build_b(scale: str, steps: int, **options) -> BLNet:
    return build(scale, steps, lateral=False, **options)


PREPROCESSING: Mapping[str, preprocess.Preprocessing] = {
    "full": preprocess.square_minus1to1(128),
    "mini": preprocess.square_minus1to1(64),
}

REFERENCE = ("Spoerer, Kietzmann, Mehrer, Charest & Kriegeskorte (2020), PLOS Comput Biol 16(10): "
             "e1008215; code github.com/cjspoerer/rcnn-sat (MIT), weights osf.io/mz9hw")

NO_HASH_NOTE = (
    "The OSF file id comes from a third-party script and no sha256 of the file is published or "
    "recorded here, so weights='official' refuses to download it; fetch the .h5 by hand, check it "
    "and pass weights=<path to the .h5>."
)

register(
    ModelCard(
        name="bl",
        display_name="BL",
        family="B/BL",
        recurrence="within-layer",
        mechanism="additive, separate weights",
        loss_timing="all steps",
        counterpart="b",
        step_unit="t",
        default_steps=BL_STEPS,
        readouts=READOUTS,
        headline_readout="logits",
        states={"baseline": 1, "after": 8},
        preprocessing=PREPROCESSING,
        official_weights=OfficialWeights(
            url="https://osf.io/download/7jrvm/",
            sha256="",
            file_format="keras_h5",
            source="Spoerer et al. 2020, OSF project mz9hw (bl_imagenet.h5)",
            filename="bl_imagenet.h5",
        ),
        colors=("#4C1D95", "#7C3AED"),
        reference=REFERENCE,
        notes=("Lateral (within-layer) recurrence: each layer adds a lateral convolution of its "
               "own previous output to its bottom-up drive; BatchNorm per layer and step; the loss "
               "averaged the cross-entropy of all 8 steps. " + NO_HASH_NOTE),
    ),
    build=build_bl,
    load_checkpoint=load_checkpoint,
)

register(
    ModelCard(
        name="b",
        display_name="B",
        family="B/BL",
        recurrence="none",
        mechanism="none (feedforward)",
        loss_timing="single output",
        counterpart=None,
        step_unit="t",
        default_steps=1,
        readouts=READOUTS,
        headline_readout="logits",
        states={"baseline": 1},
        preprocessing=PREPROCESSING,
        official_weights=OfficialWeights(
            url="https://osf.io/download/bxw65/",
            sha256="",
            file_format="keras_h5",
            source="Spoerer et al. 2020, OSF project mz9hw (b_imagenet.h5)",
            filename="b_imagenet.h5",
        ),
        colors=("#564A65", "#564A65"),
        reference=REFERENCE,
        notes=("The feedforward counterpart of BL: the same layers without laterals. "
               + NO_HASH_NOTE),
    ),
    build=build_b,
    load_checkpoint=load_checkpoint,
)
