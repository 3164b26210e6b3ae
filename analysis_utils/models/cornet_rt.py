"""CORnet-RT (Kubilius et al. 2018): four recurrent areas V1, V2, V4, IT and a decoder.

Written from the specification in ``docs/reference/models-cornet-rt-convrnn.md`` (part A), not
from the GPL-3 original. One class, :class:`CORnetRT`, is built from a per-scale
:class:`CORnetRTConfig`: ``full`` is the official architecture (its state-dict keys are the
official file's keys without the ``module.`` prefix), ``mini`` is the same class for 64x64
input and 100 classes.

Each area is one :class:`RecurrentBlock`::

    y(t) = ReLU(GN1(conv1(ReLU(GN_in(conv_input(x(t)))) + y(t-1))))

with ``y`` of the first step taken as 0. The unrolling is the official "biological" one: at each
step every area reads the *previous* step's output of the area below (double buffering), V1
reads the image at every step, and at the first step V2, V4 and IT have no input: their input
path is skipped and replaced by an all-zero placeholder of the block's output size, computed
here from the input size (the original hard-codes 56/28/14/7, i.e. 224 px input). So the image
reaches V1 at step 1, V2 at step 2, V4 at step 3 and IT at step 4.

Time index: our steps are 1-based, ``t = 1..T``; step ``t`` is the official 0-based time index
``t - 1``. With the default T = 5 (as trained), our t=5 is the official final step (index 4),
the only one the official model decodes. Here the decoder runs on IT at every step so logits
exist per step. The reference study ran 7 steps and compared t=4 with t=5 (its keys 3 and 4).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import preprocess
from ..catalogue import ModelCard, register
from ..errors import AnalysisUtilsError
from ..weights import OfficialWeights
from .base import StepRecorder, TimeResolvedModel, load_state_dict_strict

AREAS = ("V1", "V2", "V4", "IT")
READOUTS = ("penult", "logits") + AREAS


@dataclass(frozen=True)
class AreaConfig:
    """One area: channels in and out, and the kernel and stride of its input convolution."""

    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int


@dataclass(frozen=True)
class CORnetRTConfig:
    """Everything that differs between scales."""

    areas: tuple[AreaConfig, AreaConfig, AreaConfig, AreaConfig]  # V1, V2, V4, IT
    num_classes: int
    input_size: int  # the size the model was designed (and trained) for; others also run
    norm_groups: int = 32


CONFIGS = {
    # the official architecture (224 px, 1000 classes)
    "full": CORnetRTConfig(
        areas=(AreaConfig(3, 64, 7, 4), AreaConfig(64, 128, 3, 2),
               AreaConfig(128, 256, 3, 2), AreaConfig(256, 512, 3, 2)),
        num_classes=1000,
        input_size=224,
    ),
    # 64 px, 100 classes: V1 has a 5x5 kernel with stride 2 instead of 7x7 with stride 4
    # (maps 32, 16, 8, 4 px), the areas are narrower and GroupNorm has 16 groups (1, 2, 5, 12
    # channels per group, against 2, 4, 8, 16 at full scale): 0.189 GFLOP per image for the
    # 5-step forward, under the 0.2 budget (benchmarks/model_cost.py)
    "mini": CORnetRTConfig(
        areas=(AreaConfig(3, 16, 5, 2), AreaConfig(16, 32, 3, 2),
               AreaConfig(32, 80, 3, 2), AreaConfig(80, 192, 3, 2)),
        num_classes=100,
        input_size=64,
        norm_groups=16,
    ),
}


def _conv_output_size(size: int, kernel_size: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel_size) // stride + 1


class RecurrentBlock(nn.Module):
    """One CORnet-RT area; module names match the official block (they name the keys)."""

    def __init__(self, area: AreaConfig, norm_groups: int):
        super().__init__()
        self.out_channels = area.out_channels
        self.conv_input = nn.Conv2d(area.in_channels, area.out_channels, area.kernel_size,
                                    stride=area.stride, padding=area.kernel_size // 2, bias=True)
        self.norm_input = nn.GroupNorm(norm_groups, area.out_channels)
        self.nonlin_input = nn.ReLU()
        self.conv1 = nn.Conv2d(area.out_channels, area.out_channels, 3, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(norm_groups, area.out_channels)
        self.nonlin1 = nn.ReLU()
        self.output = nn.Identity()  # a hook point: the block's output and its next state

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The spatial size of this block's output for an input of ``height`` x ``width``."""
        conv = self.conv_input
        return (_conv_output_size(height, conv.kernel_size[0], conv.stride[0], conv.padding[0]),
                _conv_output_size(width, conv.kernel_size[1], conv.stride[1], conv.padding[1]))

    def forward(self, inp: torch.Tensor | None, state: torch.Tensor | None,
                placeholder: torch.Tensor | None = None) -> torch.Tensor:
        """The new output (= new state).

        ``inp`` None means "no input yet" (official t=0 of V2, V4, IT): the input path is
        skipped and ``placeholder`` (zeros of the output shape) takes its place.
        ``state`` None means the state is 0 (the first step).
        """
        if inp is None:
            skip = placeholder
        else:
            skip = self.nonlin_input(self.norm_input(self.conv_input(inp)))
        if state is not None:
            skip = skip + state
        return self.output(self.nonlin1(self.norm1(self.conv1(skip))))


class CORnetRT(TimeResolvedModel):
    """CORnet-RT at one scale, returning every step's readouts (see the module docstring)."""

    def __init__(self, config: CORnetRTConfig, steps: int = 5):
        super().__init__(steps, READOUTS)
        self.config = config
        v1, v2, v4, it = (RecurrentBlock(area, config.norm_groups) for area in config.areas)
        self.V1, self.V2, self.V4, self.IT = v1, v2, v4, it
        self.decoder = nn.Sequential(OrderedDict([
            ("avgpool", nn.AdaptiveAvgPool2d(1)),
            ("flatten", nn.Flatten()),
            ("linear", nn.Linear(config.areas[-1].out_channels, config.num_classes)),
        ]))

    def blocks(self) -> tuple[RecurrentBlock, ...]:
        return tuple(getattr(self, area) for area in AREAS)

    def output_sizes(self, height: int, width: int) -> dict[str, tuple[int, int]]:
        """Each area's output size for an input of ``height`` x ``width`` (placeholder sizes)."""
        sizes = {}
        for area, block in zip(AREAS, self.blocks()):
            height, width = block.output_size(height, width)
            sizes[area] = (height, width)
        return sizes

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise AnalysisUtilsError(
                f"CORnet-RT expects a batch of RGB images [N, 3, H, W], got {shape}; "
                "apply the card's preprocessing and stack the images into one tensor."
            )

    def _readouts(self, x: torch.Tensor, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
        self._check_input(x)
        recorder = StepRecorder(names)
        blocks = dict(zip(AREAS, self.blocks()))
        sizes = self.output_sizes(x.shape[2], x.shape[3])
        batch = x.shape[0]
        previous: dict[str, torch.Tensor | None] = {area: None for area in AREAS}
        # our step t (1-based) is the official time index t - 1 (0-based)
        for _step in range(1, self.n_steps + 1):
            current: dict[str, torch.Tensor] = {}
            for below, area in zip((None,) + AREAS[:-1], AREAS):
                if below is None:  # V1 sees the image at every step
                    current[area] = blocks[area](x, previous[area])
                elif previous[below] is None:  # step 1 (official t=0): no input yet
                    placeholder = x.new_zeros(batch, blocks[area].out_channels, *sizes[area])
                    current[area] = blocks[area](None, None, placeholder)
                else:  # the area below's output from the previous step
                    current[area] = blocks[area](previous[below], previous[area])
            previous = current  # swap in only after every area has stepped (double buffering)
            for area in AREAS:
                recorder.add(area, current[area])
            recorder.add("penult", current["IT"])
            if recorder.wants("logits"):
                recorder.add("logits", self.decoder(current["IT"]))
        return recorder.stacked()


def build(scale: str, steps: int, **options) -> CORnetRT:
    """CORnet-RT at ``scale`` ('mini' or 'full') unrolled for ``steps`` steps."""
    if options:
        raise AnalysisUtilsError(
            f"CORnet-RT takes no build options, got {sorted(options)}; pass only scale and steps."
        )
    return CORnetRT(CONFIGS[scale], steps=steps)


def load_checkpoint(model: CORnetRT, path: str | Path) -> None:
    """Load a checkpoint in the official layout: ``{'state_dict': {'module.<key>': tensor}}``.

    The ``module.`` prefix (from ``nn.DataParallel``) is removed; keys without it are taken as
    they are. The key set and shapes must then match the model exactly.
    """
    path = Path(path)
    try:
        container = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad, truncated or foreign file
        raise AnalysisUtilsError(
            f"Could not read {path} as a PyTorch checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); check that the file is complete "
            "and is the official CORnet-RT .pth file."
        ) from exc
    if not isinstance(container, dict) or not isinstance(container.get("state_dict"), dict):
        found = sorted(container)[:5] if isinstance(container, dict) else type(container).__name__
        raise AnalysisUtilsError(
            f"{path} is not in the official CORnet-RT layout: expected a dict with the key "
            f"'state_dict', found {found}; save checkpoints as {{'state_dict': state_dict}}."
        )
    state = {}
    for key, value in container["state_dict"].items():
        if not isinstance(value, torch.Tensor):
            raise AnalysisUtilsError(
                f"The checkpoint {path} stores {key!r} as {type(value).__name__}, not a tensor; "
                "it is not a CORnet-RT state dict."
            )
        state[key.removeprefix("module.")] = value
    load_state_dict_strict(model, state, str(path))


OFFICIAL_WEIGHTS = OfficialWeights(
    url="https://s3.amazonaws.com/cornet-models/cornet_rt-933c001c.pth",
    sha256="933c001c",  # torch.hub convention: the first 8 hex digits of the file's sha256
    file_format="torch",
    source="dicarlolab/CORnet (a dict with 'state_dict'; keys prefixed 'module.')",
)

CARD = ModelCard(
    name="cornet_rt",
    display_name="CORnet-RT",
    family="CORnet",
    recurrence="within-layer",
    mechanism="additive, shared weights",
    loss_timing="final step",
    counterpart=None,
    step_unit="t",
    default_steps=5,
    readouts=READOUTS,
    headline_readout="penult",
    states={"baseline": 4, "after": 5},
    preprocessing={"full": preprocess.imagenet(224, 256), "mini": preprocess.mini_imagenet(64)},
    official_weights=OFFICIAL_WEIGHTS,
    colors=("#1F77B4", "#1E90FF"),
    reference="Kubilius, Schrimpf, Nayebi, Bear, Yamins & DiCarlo (2018), bioRxiv 408385",
    notes=(
        "Step t is the official 0-based time index t-1; trained with 5 steps and the loss on "
        "the final step only. The image reaches V1 at t=1, V2 at t=2, V4 at t=3 and IT at t=4, "
        "so IT, penult and logits at t=1..3 are the same for every image; the reference study's "
        "baseline t=4 is the first image-driven IT state (its logits are near chance), hence "
        "the headline readout is penult. No feedforward counterpart is in the catalogue (the "
        "family's feedforward model, CORnet-Z, is not part of the study)."
    ),
)

register(CARD, build=build, load_checkpoint=load_checkpoint)
