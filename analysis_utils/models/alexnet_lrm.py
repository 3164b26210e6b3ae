"""AlexNet and its long-range feedback twins LRM3 (multiplicative) and LRA3 (additive).

Two classes, each built from a small :class:`AlexNetConfig` per scale:

- :class:`AlexNet`: torchvision's AlexNet layout (``features.0..12``, ``avgpool``,
  ``classifier.0..6``; the same state-dict keys), one feedforward sweep (T = 1).
- :class:`LongRangeFeedbackAlexNet`: the LRM network of Konkle & Alvarez (NeurIPS 2023). It
  runs its ``feedforward`` AlexNet several times on the same image; in pass t >= 2 five
  feedback pathways (``lrm.<destination>_modulation.from_<source>_to_<destination>``) turn the
  source activations of pass t - 1 into a modulation map M for a destination conv output x
  (before its ReLU). ``mechanism="multiplicative"`` (LRM) gives ReLU(x + x * M);
  ``mechanism="additive"`` (LRA, inferred: its code is not public) gives ReLU(x + M).
  Pass 1 is exactly the feedforward AlexNet.

One feedback pathway, for a source s from the previous pass (spec: models-lrm-alexnet.md §3):
LayerNorm of s (over channels for a vector source; over channels and space jointly for a map,
with affine parameters stored at the destination's construction size and resized bilinearly to
the source), tanh, bilinear resize to the destination size (maps only), the gain ``neg_scale``
below zero and ``pos_scale`` above, then a 1x1 convolution to the destination channels.

The official code applies the ReLU inside its hook and the backbone's own ReLU again; a ReLU
is idempotent, so here the modulated pre-activation goes through the backbone's ReLU once.

Scales: ``full`` is the published architecture (224 px, 1000 classes); ``mini`` uses the same
classes for 64 px Tiny-ImageNet input and 100 classes (narrower convs, a stride-2 5x5 conv1,
1024-wide fully connected layers).

Readouts (global average over space inside each pass): ``conv1``..``conv5`` (each conv after
its ReLU, modulated in passes >= 2), ``fc6`` (after ReLU), ``penult`` (fc7 after ReLU) and
``logits``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from .. import catalogue, preprocess
from ..errors import AnalysisUtilsError, choice_error
from ..weights import OfficialWeights
from .base import StepRecorder, TimeResolvedModel, load_state_dict_strict

# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class AlexNetConfig:
    """The numbers that differ between scales; the layer layout is always torchvision's."""

    input_size: int  # the construction size: it fixes the spatial LayerNorm parameter shapes
    num_classes: int
    conv_channels: tuple[int, int, int, int, int]
    conv_kernels: tuple[int, int, int, int, int]
    conv_strides: tuple[int, int, int, int, int]
    conv_paddings: tuple[int, int, int, int, int]
    pooled_size: int  # the adaptive average pool's output side before fc6
    fc_width: int
    dropout: float = 0.5


CONFIGS = {
    "full": AlexNetConfig(
        input_size=224, num_classes=1000,
        conv_channels=(64, 192, 384, 256, 256), conv_kernels=(11, 5, 3, 3, 3),
        conv_strides=(4, 1, 1, 1, 1), conv_paddings=(2, 2, 1, 1, 1),
        pooled_size=6, fc_width=4096,
    ),
    "mini": AlexNetConfig(
        input_size=64, num_classes=100,
        conv_channels=(24, 72, 144, 96, 96), conv_kernels=(5, 5, 3, 3, 3),
        conv_strides=(2, 1, 1, 1, 1), conv_paddings=(2, 2, 1, 1, 1),
        pooled_size=3, fc_width=1024,
    ),
}

#: torchvision indices of the five convolutions inside ``features``
CONV_INDICES = (0, 3, 6, 8, 10)
#: convolutions (1-based) followed by a 3x3 stride-2 max pool
POOLED_CONVS = (1, 2, 5)

#: readout name -> the module whose output it pools
READOUT_LAYERS = {
    "penult": "classifier.5",
    "logits": "classifier.6",
    "conv1": "features.1",
    "conv2": "features.4",
    "conv3": "features.7",
    "conv4": "features.9",
    "conv5": "features.11",
    "fc6": "classifier.2",
}
READOUTS = tuple(READOUT_LAYERS)

#: LRM3's feedback pathways (source -> destination), in the official key order
LRM3_CONNECTIONS = (
    ("classifier.6", "features.8"),
    ("features.9", "features.0"),
    ("classifier.6", "features.10"),
    ("features.12", "features.3"),
    ("classifier.2", "features.6"),
)

MECHANISMS = ("multiplicative", "additive")


def feature_shapes(config: AlexNetConfig) -> dict[str, tuple[int, int, int]]:
    """The (C, H, W) output of every ``features.<i>`` module at the construction input size."""
    shapes = {}
    size, index = config.input_size, 0
    for conv in range(5):
        kernel, stride = config.conv_kernels[conv], config.conv_strides[conv]
        size = (size + 2 * config.conv_paddings[conv] - kernel) // stride + 1
        channels = config.conv_channels[conv]
        for _ in range(2):  # the conv and its ReLU
            shapes[f"features.{index}"] = (channels, size, size)
            index += 1
        if conv + 1 in POOLED_CONVS:
            size = (size - 3) // 2 + 1
            shapes[f"features.{index}"] = (channels, size, size)
            index += 1
    return shapes


def source_channels(config: AlexNetConfig, source: str) -> int:
    """The channel count of a feedback source module's output."""
    if source == "classifier.6":
        return config.num_classes
    if source == "classifier.2":
        return config.fc_width
    return feature_shapes(config)[source][0]


# ----------------------------------------------------------------------------- AlexNet


class AlexNet(TimeResolvedModel):
    """torchvision's AlexNet layout at either scale; one feedforward sweep (T = 1)."""

    def __init__(self, config: AlexNetConfig):
        super().__init__(1, READOUTS)
        self.config = config
        layers: list[nn.Module] = []
        in_channels = 3
        for conv in range(5):
            layers.append(nn.Conv2d(in_channels, config.conv_channels[conv],
                                    kernel_size=config.conv_kernels[conv],
                                    stride=config.conv_strides[conv],
                                    padding=config.conv_paddings[conv]))
            layers.append(nn.ReLU(inplace=True))
            if conv + 1 in POOLED_CONVS:
                layers.append(nn.MaxPool2d(kernel_size=3, stride=2))
            in_channels = config.conv_channels[conv]
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((config.pooled_size, config.pooled_size))
        flat = in_channels * config.pooled_size ** 2
        self.classifier = nn.Sequential(
            nn.Dropout(p=config.dropout),
            nn.Linear(flat, config.fc_width),
            nn.ReLU(inplace=True),
            nn.Dropout(p=config.dropout),
            nn.Linear(config.fc_width, config.fc_width),
            nn.ReLU(inplace=True),
            nn.Linear(config.fc_width, config.num_classes),
        )
        self._readout_of_layer = {layer: name for name, layer in READOUT_LAYERS.items()}

    def sweep(self, x: torch.Tensor, recorder: StepRecorder,
              modulate: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
              keep: frozenset[str] = frozenset()) -> dict[str, torch.Tensor]:
        """One pass through the network.

        Every module output whose readout ``recorder`` wants is pooled into it. ``modulate``
        (name, output) -> output may replace any ``features.<i>`` output (the feedback). The
        outputs of the modules named in ``keep`` are returned (the feedback sources).
        """
        kept = {}

        def visit(name: str, value: torch.Tensor) -> None:
            readout = self._readout_of_layer.get(name)
            if readout is not None:
                recorder.add(readout, value)
            if name in keep:
                kept[name] = value

        for index, layer in enumerate(self.features):
            name = f"features.{index}"
            x = layer(x)
            if modulate is not None:
                x = modulate(name, x)
            visit(name, x)
        x = torch.flatten(self.avgpool(x), 1)
        for index, layer in enumerate(self.classifier):
            x = layer(x)
            visit(f"classifier.{index}", x)
        return kept

    def _readouts(self, x: torch.Tensor, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
        recorder = StepRecorder(names)
        self.sweep(x, recorder)
        return recorder.stacked()


# ----------------------------------------------------------------------------- feedback


def module_tag(name: str) -> str:
    """'classifier.6' -> 'classifier_6' (how the official keys spell a module)."""
    return name.replace(".", "_")


class SourceRescale(nn.Module):
    """LayerNorm -> tanh -> resize of a feedback source (a [N, C] vector or a [N, C, H, W] map).

    ``norm`` holds the affine parameters: [C] for a vector source, [C, H0, W0] at the
    destination's construction size for a map source (resized to the source at run time).
    """

    def __init__(self, channels: int, destination_size: tuple[int, int] | None):
        super().__init__()
        shape = (channels,) if destination_size is None else (channels, *destination_size)
        self.norm = nn.LayerNorm(shape, eps=1e-5)
        self.spatial = destination_size is not None

    def forward(self, source: torch.Tensor, destination_size: tuple[int, int]) -> torch.Tensor:
        if not self.spatial:
            normed = F.layer_norm(source, source.shape[1:], self.norm.weight, self.norm.bias,
                                  self.norm.eps)
            return torch.tanh(normed)[:, :, None, None]
        source_size = tuple(source.shape[-2:])
        weight = _resize(self.norm.weight[None], source_size)[0]
        bias = _resize(self.norm.bias[None], source_size)[0]
        normed = F.layer_norm(source, source.shape[1:], weight, bias, self.norm.eps)
        return _resize(torch.tanh(normed), destination_size)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    # from a channels-last input, torch's CPU bilinear kernel is about 5x faster (the same
    # interpolation); the result is channels-last, which the following ops accept as it is
    x = x.contiguous(memory_format=torch.channels_last)
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


class FeedbackPathway(nn.Module):
    """One source -> destination pathway: the modulation map m, [N, Cd, Hd, Wd] or [N, Cd, 1, 1]."""

    def __init__(self, source: str, source_channels: int, destination_channels: int,
                 destination_size: tuple[int, int] | None):
        super().__init__()
        self.source = source
        self.neg_scale = nn.Parameter(torch.ones(1))
        self.pos_scale = nn.Parameter(torch.ones(1))
        self.rescale = SourceRescale(source_channels, destination_size)
        self.modulation = nn.Conv2d(source_channels, destination_channels, kernel_size=1)

    def forward(self, source: torch.Tensor, destination_size: tuple[int, int]) -> torch.Tensor:
        squashed = self.rescale(source, destination_size)
        gained = torch.where(squashed < 0, squashed * self.neg_scale, squashed * self.pos_scale)
        return self.modulation(gained)


class LongRangeFeedbackAlexNet(TimeResolvedModel):
    """AlexNet run ``n_steps`` times on one image, with long-range feedback from pass 2 on.

    ``mechanism``: ``"multiplicative"`` (LRM: ReLU(x + x * M)) or ``"additive"`` (LRA,
    inferred: ReLU(x + M)), where M sums the destination's pathways applied to the sources of
    the previous pass.
    """

    def __init__(self, config: AlexNetConfig, mechanism: str, n_steps: int = 3,
                 connections: tuple[tuple[str, str], ...] = LRM3_CONNECTIONS):
        if mechanism not in MECHANISMS:
            raise choice_error("feedback mechanism", mechanism, MECHANISMS)
        super().__init__(n_steps, READOUTS)
        self.config = config
        self.mechanism = mechanism
        self.feedforward = AlexNet(config)  # built first: same seed, same backbone as AlexNet
        shapes = feature_shapes(config)
        self.lrm = nn.ModuleDict()
        for source, destination in connections:
            group = f"{module_tag(destination)}_modulation"
            if group not in self.lrm:
                self.lrm[group] = nn.ModuleDict()
            channels, height, width = shapes[destination]
            spatial = source.startswith("features.")
            self.lrm[group][f"from_{module_tag(source)}_to_{module_tag(destination)}"] = (
                FeedbackPathway(source, source_channels(config, source), channels,
                                (height, width) if spatial else None))
        self.source_names = frozenset(source for source, _ in connections)

    def _modulate(self, name: str, x: torch.Tensor, previous: Mapping[str, torch.Tensor]
                  ) -> torch.Tensor:
        group_name = module_tag(name) + "_modulation"
        if group_name not in self.lrm:
            return x
        group = self.lrm[group_name]
        size = tuple(x.shape[-2:])
        total = sum(pathway(previous[pathway.source], size) for pathway in group.values())
        if self.mechanism == "multiplicative":
            return x + x * total
        return x + total

    def _readouts(self, x: torch.Tensor, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
        recorder = StepRecorder(names)
        previous = None  # the feedback sources of the previous pass
        for _step in range(1, self.n_steps + 1):
            modulate = None if previous is None else partial(self._modulate, previous=previous)
            previous = self.feedforward.sweep(x, recorder, modulate, keep=self.source_names)
        return recorder.stacked()


# ----------------------------------------------------------------------------- checkpoints


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``torch.save`` file: a state dict, or a dict holding one under
    ``'state_dict'`` or ``'model'``."""
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a missing or corrupt file
        raise AnalysisUtilsError(
            f"Could not read {path} as a PyTorch checkpoint ({type(exc).__name__}: {exc}); "
            "expected a complete file written by torch.save holding a state dict."
        ) from exc
    if isinstance(content, Mapping):
        for container in ("state_dict", "model"):
            if isinstance(content.get(container), Mapping):
                content = content[container]
                break
    if not isinstance(content, Mapping):
        raise AnalysisUtilsError(
            f"The checkpoint {path} holds a {type(content).__name__}, not a state dict; expected "
            "a dict of tensors (optionally inside 'state_dict' or 'model')."
        )
    for key, value in content.items():
        if not isinstance(value, torch.Tensor):
            raise AnalysisUtilsError(
                f"The checkpoint {path} holds a {type(value).__name__} under {key!r}, not a "
                "tensor; expected a state dict of tensors (optionally inside 'state_dict' or "
                "'model')."
            )
    return dict(content)


def official_lrm_key(key: str) -> str:
    """An LRM checkpoint key renamed by the official rules, in order: drop ``module.``,
    ``backbone.`` -> ``feedforward.``, ``features<N>`` -> ``features_<N>``."""
    key = key.replace("module.", "")
    key = key.replace("backbone.", "feedforward.")
    return re.sub(r"features(\d+)", r"features_\1", key)


def load_alexnet_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load a torchvision AlexNet file (keys ``features.<i>.*``, ``classifier.<i>.*``)."""
    load_state_dict_strict(model, read_state_dict(path), str(path))


def load_lrm_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load an LRM/LRA file: rename its keys by the official rules, then demand the exact set."""
    state = {official_lrm_key(key): value for key, value in read_state_dict(path).items()}
    load_state_dict_strict(model, state, str(path))


# ----------------------------------------------------------------------------- catalogue


def _config(scale: str, options: Mapping[str, object], name: str) -> AlexNetConfig:
    if options:
        raise AnalysisUtilsError(
            f"{name!r} takes no build options, got {sorted(options)}; leave them out."
        )
    return CONFIGS[catalogue.check_scale(scale)]


def build_alexnet(scale: str = "mini", steps: int = 1, **options) -> AlexNet:
    """The feedforward AlexNet at ``scale`` (exactly one step)."""
    config = _config(scale, options, "alexnet")
    if steps != 1:
        raise AnalysisUtilsError(
            f"AlexNet is feedforward and has exactly one step, got steps={steps!r}; leave steps "
            "out or pass 1."
        )
    return AlexNet(config)


def build_lrm3(scale: str = "mini", steps: int = 3, **options) -> LongRangeFeedbackAlexNet:
    """LRM3: multiplicative long-range feedback, ``steps`` passes."""
    return LongRangeFeedbackAlexNet(_config(scale, options, "lrm3"), "multiplicative", steps)


def build_lra3(scale: str = "mini", steps: int = 3, **options) -> LongRangeFeedbackAlexNet:
    """LRA3: additive long-range feedback (inferred form), ``steps`` passes."""
    return LongRangeFeedbackAlexNet(_config(scale, options, "lra3"), "additive", steps)


_PREPROCESSING = {"full": preprocess.imagenet(224, 256), "mini": preprocess.mini_imagenet(64)}
_FAMILY = "AlexNet (long-range feedback)"
_LRM_URL = (
    "https://s3.us-east-1.wasabisys.com/visionlab-projects/dnn_feedback_dev/logs/set15/"
    "set15_alexnet_torchvision_imagenet1k_lrm_3back_2steps/"
    "28453e80-c5e5-4d76-bc81-99c5fade39ff/"
    "set15_alexnet_torchvision_imagenet1k_lrm_3back_2steps_final_weights-63ab1b3b06.pth"
)
_LRM_REFERENCE = (
    "Konkle & Alvarez (2023), Cognitive steering in deep neural networks via long-range "
    "modulatory feedback connections, NeurIPS; code harvard-visionlab/lrm-steering"
)
_PASS_NOTES = (
    "Pass 1 is plain AlexNet; pass t >= 2 is modulated by sources of pass t - 1 "
    "(logits -> conv4, conv4 -> conv1, logits -> conv5, pool5 -> conv2, fc6 -> conv3). "
    "Trained with the loss on both of 2 passes; run with 3 passes for analysis (pass 1 vs 3, "
    "as Luo, Alvarez & Konkle)."
)

catalogue.register(
    catalogue.ModelCard(
        name="alexnet", display_name="AlexNet", family=_FAMILY, recurrence="none",
        mechanism="none (feedforward)", loss_timing="single output", counterpart=None,
        step_unit="pass", default_steps=1, readouts=READOUTS, headline_readout="logits",
        states={"baseline": 1}, preprocessing=_PREPROCESSING,
        official_weights=OfficialWeights(
            url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
            sha256="7be5be79", file_format="torch",
            source="torchvision AlexNet_Weights.IMAGENET1K_V1"),
        colors=("#928B8B", "#928B8B"),
        reference="Krizhevsky (2014), One weird trick for parallelizing CNNs; torchvision AlexNet",
        notes="The feedforward counterpart of LRM3 and LRA3 (their pass 1).",
    ),
    build=build_alexnet, load_checkpoint=load_alexnet_checkpoint,
)

catalogue.register(
    catalogue.ModelCard(
        name="lrm3", display_name="LRM3", family=_FAMILY, recurrence="long-range",
        mechanism="multiplicative", loss_timing="both passes", counterpart="alexnet",
        step_unit="pass", default_steps=3, readouts=READOUTS, headline_readout="logits",
        states={"baseline": 1, "after": 3}, preprocessing=_PREPROCESSING,
        official_weights=OfficialWeights(
            url=_LRM_URL, sha256="63ab1b3b06", file_format="torch",
            source="harvard-visionlab/lrm-steering, torch.hub alexnet_lrm3"),
        colors=("#8E0B0D", "#E41A1C"), reference=_LRM_REFERENCE,
        notes="Destination update ReLU(x + x * M). " + _PASS_NOTES,
    ),
    build=build_lrm3, load_checkpoint=load_lrm_checkpoint,
)

catalogue.register(
    catalogue.ModelCard(
        name="lra3", display_name="LRA3", family=_FAMILY, recurrence="long-range",
        mechanism="additive", loss_timing="both passes", counterpart="alexnet",
        step_unit="pass", default_steps=3, readouts=READOUTS, headline_readout="logits",
        states={"baseline": 1, "after": 3}, preprocessing=_PREPROCESSING,
        official_weights=None, colors=("#1B7F1B", "#2ECC71"),
        reference=_LRM_REFERENCE + "; additive variant used by Luo, Alvarez & Konkle",
        notes=("Destination update ReLU(x + M): this form is inferred, because the LRA code and "
               "weights are not public; it keeps LRM3's connections, LayerNorm, tanh and "
               "neg/pos scales. " + _PASS_NOTES),
    ),
    build=build_lra3, load_checkpoint=load_lrm_checkpoint,
)
