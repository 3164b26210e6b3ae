"""ConvRNN ``rgc_intermediate`` (Nayebi et al. 2018, 2022): reciprocal gated cells with feedback.

Written from the specification in ``docs/reference/models-cornet-rt-convrnn.md`` (part B), not
from the TF1 original. One class, :class:`ConvRNN`, is built from a per-scale
:class:`ConvRNNConfig`: ``full`` is the official architecture (224 px, 1000 classes, the
official widths), ``mini`` the same graph for 64x64 input and 100 classes.

The graph has eleven nodes, ``conv1 .. conv10`` and the classifier ``imnetds``:

- conv1-conv3 are a convolution and ELU (conv1 followed by a 2x2 max-pool); conv4-conv10 are a
  convolution followed by a reciprocal gated cell (:class:`ReciprocalGatedCell`), some followed
  by a max-pool; imnetds is a global average pool and a fully connected layer.
- Feedforward edges run conv1 -> conv2 -> ... -> conv10 -> imnetds; the five top-down edges are
  conv8 -> conv5, conv9 -> conv6, conv10 -> conv7, conv7 -> conv6 and conv10 -> conv9.
- "Harbor": a node's inputs are its predecessors in string-sorted name order, each resized to
  the size of the feedforward predecessor's output (bilinear, corners aligned), the
  feedforward input first; the feedforward part goes through the node's convolution, the
  feedback part (the others, concatenated in that order) into the cell's output path.
- Every edge has a delay of one step: at step t a node reads its predecessors' outputs and its
  own state from step t-1. At step 1 the predecessors' outputs and all states are zeros, so
  every node except conv1 gives a bias-driven output that is the same for every image; the
  image reaches conv K at step K and the logits at step 11.
- Presentation: conv1 reads the frame of step t. By default (``presentation="default"``) the
  frame is the image for t = 1..``image_off`` (12) and the blank value 0.5 (in normalised input
  space, as the official code) afterwards; ``presentation="constant"`` shows the image at
  every step. The default unroll is 17 steps and the official loss is on the final step.

Steps are 1-based here: our step t is the official 0-based time index t - 1.

The official weights are a TF1 checkpoint (``.index`` + ``.data-00000-of-00001``).
:func:`load_checkpoint` reads that format directly (:class:`TFCheckpointReader`, no TensorFlow),
checks every variable name and shape against the model, converts the layouts (HWIO -> OIHW,
depthwise [k, k, C, 1] -> [C, 1, k, k], dense [in, out] -> [out, in]) and caches the converted
state dict as safetensors keyed by the checkpoint's sha256.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import preprocess
from ..catalogue import ModelCard, register
from ..errors import AnalysisUtilsError, choice_error
from ..weights import OfficialWeights, file_sha256, weights_cache_dir
from .base import StepRecorder, TimeResolvedModel, global_average, load_state_dict_strict

CONV_NODES = tuple(f"conv{k}" for k in range(1, 11))
CELL_NODES = CONV_NODES[3:]  # conv4 .. conv10
READOUTS = ("penult", "logits") + CONV_NODES

#: the top-down edges of rgc_intermediate (source, target)
FEEDBACK_EDGES = (("conv8", "conv5"), ("conv9", "conv6"), ("conv10", "conv7"),
                  ("conv7", "conv6"), ("conv10", "conv9"))

#: the value of the blank frames, in normalised input space (as the official code)
BLANK_VALUE = 0.5
PRESENTATIONS = ("default", "constant")
DEFAULT_STEPS = 17
DEFAULT_IMAGE_OFF = 12

# the "median" cell's constants: tau = offset * (1 - sigmoid(.)), gate = offset * (1 - tanh(.))
TAU_OFFSET = 0.9219348064291611
GATE_OFFSET = 0.7006566684988862


def feedback_sources(node: str) -> tuple[str, ...]:
    """The feedback predecessors of ``node`` in the harbor's (string-sorted) channel order."""
    return tuple(sorted(source for source, target in FEEDBACK_EDGES if target == node))


def feedforward_source(node: str) -> str | None:
    """The feedforward predecessor of ``node`` (None for conv1, which reads the frame)."""
    index = CONV_NODES.index(node)
    return CONV_NODES[index - 1] if index > 0 else None


@dataclass(frozen=True)
class ConvRNNConfig:
    """Everything that differs between scales."""

    input_size: int
    num_classes: int
    widths: tuple[int, ...]  # output channels of conv1 .. conv10
    conv1_kernel: int
    conv1_stride: int
    pooled: tuple[str, ...]  # nodes followed by a 2x2 max-pool with stride 2 (TF SAME)
    cell_depth: int  # channels of the cell state c
    gate_kernel: int  # the depth-separable tau and gate convolutions
    ff_kernel: int = 3  # conv2 .. conv10
    cell_input_kernel: int = 2  # input -> cell
    out_input_kernel: int = 3  # input -> out


CONFIGS = {
    # the official rgc_intermediate: 224 px, 1000 classes
    "full": ConvRNNConfig(
        input_size=224,
        num_classes=1000,
        widths=(64, 128, 128, 128, 128, 256, 256, 256, 512, 512),
        conv1_kernel=7,
        conv1_stride=2,
        pooled=("conv1", "conv4", "conv6", "conv7", "conv10"),
        cell_depth=64,
        gate_kernel=7,
    ),
    # 64 px, 100 classes, at most 0.4 GFLOP per image over 17 steps (0.392, counted with
    # torch.utils.flop_counter): the same graph and cell; conv1 is 5x5 with stride 2, and the
    # pools follow conv1, conv2, conv4 and conv6 (maps 16, 8, 8, 4, 4, 2, 2, 2, 2, 2 px);
    # narrower layers, a 24-channel cell state and 3x3 depth-separable tau and gate convolutions
    "mini": ConvRNNConfig(
        input_size=64,
        num_classes=100,
        widths=(16, 32, 32, 32, 48, 64, 96, 96, 128, 144),
        conv1_kernel=5,
        conv1_stride=2,
        pooled=("conv1", "conv2", "conv4", "conv6"),
        cell_depth=24,
        gate_kernel=3,
    ),
}


# ----------------------------------------------------------------------------- layers


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF's SAME padding (before, after) along one axis: the extra pixel goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """A convolution with TF ``SAME`` padding (asymmetric for even kernels or strides > 1)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1,
                 bias: bool = True, groups: int = 1):
        super().__init__(in_channels, out_channels, kernel, stride=stride, padding=0, bias=bias,
                         groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = _same_padding(x.shape[2], self.kernel_size[0], self.stride[0])
        left, right = _same_padding(x.shape[3], self.kernel_size[1], self.stride[1])
        if top == bottom and left == right:  # symmetric (odd kernels at stride 1): no copy
            return F.conv2d(x, self.weight, self.bias, self.stride, (top, left), 1, self.groups)
        return super().forward(F.pad(x, (left, right, top, bottom)))


class SeparableConv2d(nn.Module):
    """Depthwise k x k (no bias), then pointwise 1 x 1 with a bias (TF separable_conv2d)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int):
        super().__init__()
        self.dw = SameConv2d(in_channels, in_channels, kernel, bias=False, groups=in_channels)
        self.pw = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class ReciprocalGatedCell(nn.Module):
    """The "median" reciprocal gated cell of rgc_intermediate, with feedback into the output.

    One step, with ``a = ELU(ff)`` the activated feedforward convolution, ``u`` the node's
    feedforward input, ``f`` the concatenated feedback and (c, h) the previous state::

        c' = ELU(0.922 (1 - sigmoid(c_tau(c))) c + 0.701 (1 - tanh(c_gate(h))) in2cell(a))
        h' = ELU(0.922 (1 - sigmoid(h_tau(h))) h
                 + 0.701 (1 - tanh(h_gate(c))) (in2out(a) + residual(u) + fb(f)))

    ``residual(u)`` is ``u`` when the channel counts match, else a 1x1 projection without bias.
    """

    def __init__(self, in_channels: int, out_channels: int, feedback_channels: int,
                 config: ConvRNNConfig):
        super().__init__()
        depth = config.cell_depth
        self.in2cell = SameConv2d(out_channels, depth, config.cell_input_kernel)
        self.c_tau = SeparableConv2d(depth, depth, config.gate_kernel)
        self.c_gate = SeparableConv2d(out_channels, depth, config.gate_kernel)
        self.in2out = SameConv2d(out_channels, out_channels, config.out_input_kernel)
        self.res_proj = (nn.Conv2d(in_channels, out_channels, 1, bias=False)
                         if in_channels != out_channels else None)
        self.fb = nn.Conv2d(feedback_channels, out_channels, 1) if feedback_channels else None
        self.h_tau = SeparableConv2d(out_channels, out_channels, config.gate_kernel)
        self.h_gate = SeparableConv2d(depth, out_channels, config.gate_kernel)

    def forward(self, a: torch.Tensor, u: torch.Tensor, feedback: torch.Tensor | None,
                c: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cell_input = self.in2cell(a)
        tau_c = torch.sigmoid(self.c_tau(c))
        gate_c = torch.tanh(self.c_gate(h))
        new_c = F.elu(TAU_OFFSET * (1 - tau_c) * c + GATE_OFFSET * (1 - gate_c) * cell_input)

        out_input = self.in2out(a)
        out_input = out_input + (u if self.res_proj is None else self.res_proj(u))
        if self.fb is not None:
            out_input = out_input + self.fb(feedback)
        tau_h = torch.sigmoid(self.h_tau(h))
        gate_h = torch.tanh(self.h_gate(c))  # the previous c
        new_h = F.elu(TAU_OFFSET * (1 - tau_h) * h + GATE_OFFSET * (1 - gate_h) * out_input)
        return new_c, new_h


class ConvNode(nn.Module):
    """conv1 .. conv10: the feedforward convolution, the cell (conv4 on), the max-pool."""

    def __init__(self, name: str, config: ConvRNNConfig):
        super().__init__()
        index = CONV_NODES.index(name)
        out_channels = config.widths[index]
        in_channels = config.widths[index - 1] if index else 3
        kernel, stride = ((config.conv1_kernel, config.conv1_stride) if index == 0
                          else (config.ff_kernel, 1))
        self.name = name
        self.out_channels = out_channels
        self.stride = stride
        self.pooled = name in config.pooled
        self.ff = SameConv2d(in_channels, out_channels, kernel, stride=stride)
        self.feedback = feedback_sources(name)
        if name in CELL_NODES:
            feedback_channels = sum(config.widths[CONV_NODES.index(s)] for s in self.feedback)
            self.cell = ReciprocalGatedCell(in_channels, out_channels, feedback_channels, config)
        else:
            self.cell = None

    def cell_size(self, input_size: int) -> int:
        """The spatial size of the convolution's output (and of the cell state)."""
        return -(-input_size // self.stride)

    def output_size(self, input_size: int) -> int:
        size = self.cell_size(input_size)
        return -(-size // 2) if self.pooled else size

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        # TF SAME 2x2/2 max-pool == ceil mode (the padded pixel is never the maximum)
        if not self.pooled:
            return x
        if x.shape[2] % 2 or x.shape[3] % 2:
            return F.max_pool2d(x, 2, 2, ceil_mode=True)
        # even sizes: the maximum of the four pixels of each window, without pooling indices
        return torch.maximum(torch.maximum(x[:, :, 0::2, 0::2], x[:, :, 0::2, 1::2]),
                             torch.maximum(x[:, :, 1::2, 0::2], x[:, :, 1::2, 1::2]))

    def forward(self, u: torch.Tensor, feedback: torch.Tensor | None,
                state: tuple[torch.Tensor, torch.Tensor] | None):
        """(output, new state); the state is None for the memoryless conv1 .. conv3."""
        a = F.elu(self.ff(u))
        if self.cell is None:
            return self.pool(a), None
        c, h = self.cell(a, u, feedback, *state)
        return self.pool(h), (c, h)


class ConvRNN(TimeResolvedModel):
    """ConvRNN rgc_intermediate at one scale, returning every step (see the module docstring)."""

    def __init__(self, config: ConvRNNConfig, steps: int = DEFAULT_STEPS,
                 presentation: str = "default", image_off: int | None = None):
        super().__init__(steps, READOUTS)
        if presentation not in PRESENTATIONS:
            raise choice_error("presentation", presentation, PRESENTATIONS)
        if presentation == "constant":
            if image_off is not None:
                raise AnalysisUtilsError(
                    f"image_off={image_off!r} has no effect with presentation='constant' (the "
                    "image is shown at every step); drop image_off or use presentation='default'."
                )
        else:
            image_off = DEFAULT_IMAGE_OFF if image_off is None else image_off
            if not isinstance(image_off, int) or isinstance(image_off, bool) or image_off < 1:
                raise AnalysisUtilsError(
                    f"image_off must be a positive integer (the last step that shows the image), "
                    f"got {image_off!r}."
                )
        self.config = config
        self.presentation = presentation
        self.image_off = image_off
        for name in CONV_NODES:
            self.add_module(name, ConvNode(name, config))
        self.readout = nn.Module()
        self.readout.fc = nn.Linear(config.widths[-1], config.num_classes)
        self.sizes = self._output_sizes(config.input_size)
        #: compute image-independent values once with batch 1 and reuse unchanged memoryless
        #: outputs (see ``_readouts``); False runs the plain loop, for tests and benchmarks
        self.shared_steps = True

    def nodes(self) -> tuple[ConvNode, ...]:
        return tuple(getattr(self, name) for name in CONV_NODES)

    def _output_sizes(self, input_size: int) -> dict[str, int]:
        sizes, size = {}, input_size
        for node in self.nodes():
            size = node.output_size(size)
            sizes[node.name] = size
        return sizes

    def shows_image(self, step: int) -> bool:
        """Whether conv1 reads the image (True) or the blank value at 1-based ``step``."""
        return self.image_off is None or step <= self.image_off

    def _check_input(self, x: torch.Tensor) -> None:
        size = self.config.input_size
        if (not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3
                or x.shape[2] != size or x.shape[3] != size):
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise AnalysisUtilsError(
                f"ConvRNN at this scale expects images [N, 3, {size}, {size}], got {shape}; "
                "apply the card's preprocessing for this scale and stack the images."
            )

    def _readouts(self, x: torch.Tensor, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """The time loop, with two shortcuts that change no number (``shared_steps=True``):

        - image-independent values (the zero stand-ins, the blank frame and everything computed
          only from them, e.g. conv K before step K) are held once, with batch size 1, and
          broadcast where they meet image-driven values; every operation is per image, so each
          image's numbers are those of the plain loop;
        - a memoryless node (conv1 .. conv3) that reads the very tensor it read at the previous
          step returns its previous output instead of computing it again (conv1 reads the same
          image for t = 1..image_off, so conv2 and conv3 then read the same input as well).

        ``shared_steps=False`` runs the plain loop: batch N everywhere, every node every step.
        """
        self._check_input(x)
        recorder = StepRecorder(names)
        batch = x.shape[0]
        shared = 1 if self.shared_steps else batch
        blank = x.new_full((shared, *x.shape[1:]), BLANK_VALUE)
        nodes = self.nodes()
        # step 1 (official t=0): every predecessor output and every state is zero
        outputs = {node.name: x.new_zeros(shared, node.out_channels, self.sizes[node.name],
                                          self.sizes[node.name]) for node in nodes}
        states = {}
        input_size = self.config.input_size
        for node in nodes:
            if node.cell is not None:
                size = node.cell_size(input_size)
                states[node.name] = (x.new_zeros(shared, self.config.cell_depth, size, size),
                                     x.new_zeros(shared, node.out_channels, size, size))
            input_size = self.sizes[node.name]
        last_call: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # memoryless: (u, output)

        def record(name: str, value: torch.Tensor) -> None:
            if recorder.wants(name):  # pool the shared row once, then broadcast it
                recorder.add(name, global_average(value).expand(batch, -1))

        for step in range(1, self.n_steps + 1):
            new_outputs, new_states = {}, {}
            for node in nodes:
                source = feedforward_source(node.name)
                if source is None:
                    u = x if self.shows_image(step) else blank
                else:
                    u = outputs[source]
                if self.shared_steps and node.cell is None and node.name in last_call \
                        and last_call[node.name][0] is u:
                    new_outputs[node.name] = last_call[node.name][1]
                    continue
                feedback = None
                if node.feedback:
                    size = u.shape[-2:]
                    parts = [_resize(outputs[s], size) for s in node.feedback]
                    rows = max(part.shape[0] for part in parts)
                    feedback = torch.cat([part.expand(rows, -1, -1, -1) for part in parts], 1)
                new_outputs[node.name], state = node(u, feedback, states.get(node.name))
                if state is not None:
                    new_states[node.name] = state
                else:
                    last_call[node.name] = (u, new_outputs[node.name])
            # imnetds reads conv10 of the previous step, like every other edge
            if recorder.wants("logits"):
                record("logits", self.readout.fc(outputs["conv10"].mean(dim=(2, 3))))
            outputs, states = new_outputs, new_states  # swap in after every node has stepped
            for name in CONV_NODES:
                record(name, outputs[name])
            record("penult", outputs["conv10"])
        return recorder.stacked()


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinear resize with aligned corners (TF1 resize_images), a no-op at the same size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


def build(scale: str, steps: int, presentation: str = "default", image_off: int | None = None,
          **options) -> ConvRNN:
    """ConvRNN at ``scale`` for ``steps`` steps with the presentation schedule given."""
    if options:
        raise AnalysisUtilsError(
            f"ConvRNN takes the build options 'presentation' and 'image_off', got "
            f"{sorted(options)}; remove the others."
        )
    return ConvRNN(CONFIGS[scale], steps=steps, presentation=presentation, image_off=image_off)


# ----------------------------------------------------------------------------- TF checkpoints
#
# A TF checkpoint (V2 "tensor bundle") is ``<prefix>.index``, a LevelDB-style sorted table whose
# values are protobufs, plus ``<prefix>.data-<shard>-of-<shards>`` with the raw tensor bytes:
#
# - the table ends in a 48-byte footer: two block handles (metaindex, index; each a varint
#   offset and a varint size), zero padding, and the 8-byte magic number below;
# - every block is followed by a 5-byte trailer: the compression type (0 = none) and the masked
#   CRC32C of the block and the type byte; a block is a run of prefix-compressed entries
#   (varints shared, unshared, value length; the key's unshared bytes; the value), then the
#   restart offsets (uint32 each) and their count (uint32);
# - the index block maps each data block's last key to its handle;
# - the entry with the empty key is a BundleHeaderProto (1: num_shards, 2: endianness), every
#   other key is a tensor name whose value is a BundleEntryProto (1: dtype, 2: shape, 3: shard
#   id, 4: offset, 5: size, 6: masked CRC32C of the bytes, 7: slices).

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48
_DTYPES = {1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"), 9: np.dtype("<i8"),
           19: np.dtype("<f2")}


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """The CRC32C (Castagnoli) checksum of ``data``, as TensorFlow and LevelDB compute it."""
    table = _CRC32C_TABLE
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(buffer: bytes, position: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if position >= len(buffer):
            raise ValueError("a varint runs past the end of its buffer")
        byte = buffer[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7


def _proto_fields(buffer: bytes) -> list[tuple[int, int | bytes]]:
    """The (field number, value) pairs of a serialised protobuf message, in order."""
    fields, position = [], 0
    while position < len(buffer):
        tag, position = _varint(buffer, position)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, position = _varint(buffer, position)
        elif wire == 1:
            value, position = buffer[position:position + 8], position + 8
        elif wire == 2:
            length, position = _varint(buffer, position)
            value, position = buffer[position:position + length], position + length
        elif wire == 5:
            value, position = buffer[position:position + 4], position + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        fields.append((number, value))
    if position != len(buffer):
        raise ValueError("a protobuf field runs past the end of its message")
    return fields


@dataclass(frozen=True)
class TFTensorEntry:
    """Where one tensor of a TF checkpoint lives and what it is."""

    name: str
    dtype: int  # TF DataType enum (1 = float32)
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int | None
    sliced: bool


class TFCheckpointReader:
    """Reads a TF checkpoint (index + data shards) without TensorFlow.

    ``entries`` maps every tensor name to its :class:`TFTensorEntry`; :meth:`read` returns a
    tensor as a numpy array after checking its size and CRC32C.
    """

    def __init__(self, prefix: str | Path):
        self.prefix = Path(prefix)
        self.index_path = Path(f"{self.prefix}.index")
        if not self.index_path.is_file():
            raise AnalysisUtilsError(
                f"No TF checkpoint index at {self.index_path}; pass the checkpoint prefix (the "
                "path without '.index'), its .index file or its .data-00000-of-00001 file."
            )
        try:
            records = self._table_records(self.index_path.read_bytes())
            self.num_shards, self.entries = self._parse_records(records)
        except (ValueError, IndexError, struct.error) as exc:
            raise AnalysisUtilsError(
                f"{self.index_path} is not a readable TF checkpoint index ({exc}); check that the "
                "file is complete and is the .index file of a TF checkpoint."
            ) from exc

    # the sorted table ------------------------------------------------------------------

    def _block(self, data: bytes, offset: int, size: int) -> bytes:
        if offset + size + 5 > len(data):
            raise ValueError("a block handle points past the end of the file")
        block = data[offset:offset + size]
        kind = data[offset + size]
        (stored,) = struct.unpack("<I", data[offset + size + 1:offset + size + 5])
        if _masked(crc32c(data[offset:offset + size + 1])) != stored:
            raise ValueError(f"the checksum of the block at byte {offset} does not match")
        if kind != 0:
            raise ValueError(f"block compression type {kind} is not supported (only 0, none)")
        return block

    @staticmethod
    def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
        (restarts,) = struct.unpack("<I", block[-4:])
        end = len(block) - 4 - 4 * restarts
        if end < 0:
            raise ValueError("a block's restart array is larger than the block")
        entries, key, position = [], b"", 0
        while position < end:
            shared, position = _varint(block, position)
            unshared, position = _varint(block, position)
            length, position = _varint(block, position)
            key = key[:shared] + block[position:position + unshared]
            position += unshared
            entries.append((key, block[position:position + length]))
            position += length
        return entries

    def _table_records(self, data: bytes) -> list[tuple[bytes, bytes]]:
        if len(data) < _FOOTER_SIZE:
            raise ValueError("the file is shorter than a table footer")
        footer = data[-_FOOTER_SIZE:]
        (magic,) = struct.unpack("<Q", footer[-8:])
        if magic != _TABLE_MAGIC:
            raise ValueError("the table magic number is missing")
        _, position = _varint(footer, 0)  # metaindex offset
        _, position = _varint(footer, position)  # metaindex size
        index_offset, position = _varint(footer, position)
        index_size, _ = _varint(footer, position)
        records = []
        for _, handle in self._block_entries(self._block(data, index_offset, index_size)):
            offset, position = _varint(handle, 0)
            size, _ = _varint(handle, position)
            records.extend(self._block_entries(self._block(data, offset, size)))
        return records

    # the protobufs ---------------------------------------------------------------------

    @staticmethod
    def _parse_records(records) -> tuple[int, dict[str, TFTensorEntry]]:
        num_shards, entries = None, {}
        for key, value in records:
            fields = _proto_fields(value)
            if key == b"":  # BundleHeaderProto
                header = dict(fields)
                num_shards = header.get(1, 0)
                if header.get(2, 0) != 0:
                    raise ValueError("the checkpoint is big-endian; only little-endian is read")
                continue
            dtype, shape, shard, offset, size, checksum, sliced = 0, (), 0, 0, 0, None, False
            for number, field in fields:
                if number == 1:
                    dtype = field
                elif number == 2:
                    dims = []
                    for dim_number, dim in _proto_fields(field):
                        if dim_number == 2:
                            dims.append(dict(_proto_fields(dim)).get(1, 0))
                    shape = tuple(dims)
                elif number == 3:
                    shard = field
                elif number == 4:
                    offset = field
                elif number == 5:
                    size = field
                elif number == 6:
                    (checksum,) = struct.unpack("<I", field)
                elif number == 7:
                    sliced = True
            name = key.decode("utf-8")
            entries[name] = TFTensorEntry(name, dtype, shape, shard, offset, size, checksum,
                                          sliced)
        if num_shards is None:
            raise ValueError("the bundle header (the entry with the empty key) is missing")
        return num_shards, entries

    # tensors ---------------------------------------------------------------------------

    def data_path(self, shard: int) -> Path:
        return Path(f"{self.prefix}.data-{shard:05d}-of-{self.num_shards:05d}")

    def read(self, name: str) -> np.ndarray:
        """The tensor ``name`` as a numpy array (little-endian, C order)."""
        entry = self.entries[name]
        dtype = _DTYPES.get(entry.dtype)
        if dtype is None or entry.sliced:
            what = "a partitioned (sliced) variable" if entry.sliced else f"dtype {entry.dtype}"
            raise AnalysisUtilsError(
                f"The checkpoint tensor {name!r} is {what}, which this reader does not handle; "
                "only whole float and integer tensors are read."
            )
        expected = int(np.prod(entry.shape, dtype=np.int64)) * dtype.itemsize
        path = self.data_path(entry.shard)
        if not path.is_file():
            raise AnalysisUtilsError(
                f"The TF checkpoint data file {path} is missing; download it next to "
                f"{self.index_path} (same prefix)."
            )
        with open(path, "rb") as handle:
            handle.seek(entry.offset)
            raw = handle.read(entry.size)
        if entry.size != expected or len(raw) != expected:
            raise AnalysisUtilsError(
                f"The checkpoint tensor {name!r} has {len(raw)} bytes in {path}, but its shape "
                f"{entry.shape} needs {expected}; the data file is truncated or does not belong "
                "to this index."
            )
        if entry.crc32c is not None and _masked(crc32c(raw)) != entry.crc32c:
            raise AnalysisUtilsError(
                f"The bytes of {name!r} in {path} fail their CRC32C check; the data file is "
                "corrupt or does not belong to this index: download it again."
            )
        return np.frombuffer(raw, dtype=dtype).reshape(entry.shape).copy()


# ----------------------------------------------------------------------------- conversion

#: bump when the conversion changes, so converted files cached by an older version are not used
CONVERTER_VERSION = 1

#: checkpoint variables the model does not use: optimizer slots, the step counter and the
#: frozen memory_decay scalars (0) of the memoryless nodes
_UNUSED_SUFFIXES = ("/Momentum",)
_UNUSED_NAMES = ("global_step",) + tuple(
    f"tnn_model/{node}/memory_decay" for node in ("conv1", "conv2", "conv3", "imnetds"))

# the cell's modules and their scopes under tnn_model/<node>/ReciprocalGateCell
_CELL_SEPARABLE = (("c_tau", "cell/tau"), ("c_gate", "cell/out_to_cell"),
                   ("h_tau", "out/tau"), ("h_gate", "out/gate"))
_CELL_CONVS = (("in2cell", "cell/input_to_cell"), ("in2out", "out/input_to_out"),
               ("fb", "out/feedback_to_out"))


def official_variable_map(model: ConvRNN) -> dict[str, tuple[str, str]]:
    """``{official TF variable name: (state-dict key, layout)}`` for every model tensor.

    Layouts: ``conv`` (TF HWIO, ours OIHW), ``depthwise`` (TF [k, k, C, 1], ours [C, 1, k, k]),
    ``dense`` (TF [in, out], ours [out, in]) and ``vector``.
    """
    names: dict[str, tuple[str, str]] = {}
    for node in model.nodes():
        scope = f"tnn_model/{node.name}"
        names[f"{scope}/pre_0/weights_basenet"] = (f"{node.name}.ff.weight", "conv")
        names[f"{scope}/pre_0/bias"] = (f"{node.name}.ff.bias", "vector")
        if node.cell is None:
            continue
        cell, key = f"{scope}/ReciprocalGateCell", f"{node.name}.cell"
        for module, tf_scope in _CELL_CONVS:
            if getattr(node.cell, module) is None:
                continue
            names[f"{cell}/{tf_scope}_weights"] = (f"{key}.{module}.weight", "conv")
            names[f"{cell}/{tf_scope}_bias"] = (f"{key}.{module}.bias", "vector")
        if node.cell.res_proj is not None:
            names[f"{cell}/out/residual_add_weights"] = (f"{key}.res_proj.weight", "conv")
        for module, tf_scope in _CELL_SEPARABLE:
            names[f"{cell}/{tf_scope}/depthwise_weights"] = (f"{key}.{module}.dw.weight",
                                                             "depthwise")
            names[f"{cell}/{tf_scope}/pointwise_weights"] = (f"{key}.{module}.pw.weight", "conv")
            names[f"{cell}/{tf_scope}/bias"] = (f"{key}.{module}.pw.bias", "vector")
    names["tnn_model/imnetds/pre_3/weights"] = ("readout.fc.weight", "dense")
    names["tnn_model/imnetds/pre_3/bias"] = ("readout.fc.bias", "vector")
    return names


def to_official_layout(tensor: torch.Tensor, layout: str) -> np.ndarray:
    """A state-dict tensor in the official TF layout (the inverse of the conversion)."""
    if layout == "conv":
        tensor = tensor.permute(2, 3, 1, 0)
    elif layout == "depthwise":
        tensor = tensor.permute(2, 3, 0, 1)
    elif layout == "dense":
        tensor = tensor.t()
    return tensor.detach().cpu().contiguous().numpy()


def from_official_layout(array: np.ndarray, layout: str) -> torch.Tensor:
    """An official TF array as a state-dict tensor (HWIO -> OIHW, [k,k,C,1] -> [C,1,k,k], ...)."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if layout == "conv":
        tensor = tensor.permute(3, 2, 0, 1)
    elif layout == "depthwise":
        tensor = tensor.permute(2, 3, 0, 1)
    elif layout == "dense":
        tensor = tensor.t()
    return tensor.contiguous()


def official_variables(model: ConvRNN) -> dict[str, np.ndarray]:
    """The model's weights under the official TF names and in the official layouts."""
    state = model.state_dict()
    return {name: to_official_layout(state[key], layout)
            for name, (key, layout) in official_variable_map(model).items()}


def _official_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    if layout == "conv":
        return (shape[2], shape[3], shape[1], shape[0])
    if layout == "depthwise":
        return (shape[2], shape[3], shape[0], shape[1])
    if layout == "dense":
        return (shape[1], shape[0])
    return tuple(shape)


def convert_checkpoint(model: ConvRNN, reader: TFCheckpointReader) -> dict[str, torch.Tensor]:
    """The state dict for ``model`` from a TF checkpoint, refusing the first name or shape that
    does not match the official layout."""
    source = reader.index_path
    variable_map = official_variable_map(model)
    expected = model.state_dict()
    for name, (key, layout) in variable_map.items():
        entry = reader.entries.get(name)
        if entry is None:
            raise AnalysisUtilsError(
                f"The checkpoint {source} lacks the variable {name!r}; it is not an "
                "rgc_intermediate checkpoint of this scale (check the model and the file)."
            )
        shape = _official_shape(tuple(expected[key].shape), layout)
        if tuple(entry.shape) != shape:
            raise AnalysisUtilsError(
                f"The checkpoint {source} gives {name!r} the shape {tuple(entry.shape)}, but the "
                f"model needs {shape}; check that the file and the scale match."
            )
        if entry.dtype != 1:
            raise AnalysisUtilsError(
                f"The checkpoint {source} stores {name!r} with TF dtype {entry.dtype}, not "
                "float32 (1); it is not an official rgc_intermediate checkpoint."
            )
    for name in sorted(reader.entries):
        if (name not in variable_map and name not in _UNUSED_NAMES
                and not name.endswith(_UNUSED_SUFFIXES)):
            raise AnalysisUtilsError(
                f"The checkpoint {source} has the variable {name!r}, which rgc_intermediate does "
                "not have; it is a checkpoint of another model (check the file)."
            )
    return {key: from_official_layout(reader.read(name), layout)
            for name, (key, layout) in variable_map.items()}


def checkpoint_prefix(path: str | Path) -> Path:
    """The prefix of a TF checkpoint given the prefix, its .index or one of its .data files."""
    text = str(path)
    if text.endswith(".index"):
        return Path(text[: -len(".index")])
    stem, separator, _ = text.rpartition(".data-")
    return Path(stem) if separator else Path(text)


def checkpoint_sha256(prefix: str | Path) -> str:
    """One sha256 over the checkpoint: the digests of its .index and .data files, in order."""
    reader_prefix = Path(prefix)
    index = Path(f"{reader_prefix}.index")
    shards = sorted(index.parent.glob(f"{index.name[: -len('.index')]}.data-*"))
    digest = hashlib.sha256()
    for path in [index] + shards:
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()


def converted_cache_path(sha256: str) -> Path:
    """Where the converted state dict of the checkpoint with digest ``sha256`` is cached."""
    return (weights_cache_dir() / "converted"
            / f"convrnn-tf1-{sha256}-v{CONVERTER_VERSION}.safetensors")


def load_checkpoint(model: ConvRNN, path: str | Path) -> None:
    """Load an official TF1 checkpoint (prefix, .index or .data file) into ``model``.

    The first load converts the checkpoint and caches the state dict as safetensors under the
    weights cache, keyed by the checkpoint's sha256; later loads read the cache.
    """
    from safetensors.torch import load_file, save_file

    prefix = checkpoint_prefix(path)
    reader = TFCheckpointReader(prefix)  # refuses a missing or unreadable index
    digest = checkpoint_sha256(prefix)
    cached = converted_cache_path(digest)
    if cached.is_file():
        load_state_dict_strict(model, load_file(str(cached)), f"{cached} (converted {prefix})")
        return
    state = convert_checkpoint(model, reader)
    load_state_dict_strict(model, state, str(prefix))
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_name(cached.name + ".part")
    save_file(state, str(partial), metadata={"source": str(prefix), "sha256": digest})
    partial.replace(cached)


# ----------------------------------------------------------------------------- the card

_CHECKPOINT_URL = "https://convrnnckpts.s3-us-west-1.amazonaws.com/rgc_intermediate/model.ckpt"

OFFICIAL_WEIGHTS = OfficialWeights(
    url=f"{_CHECKPOINT_URL}.index",
    sha256="",  # none published: fetch refuses to download an unverifiable file
    file_format="tf_checkpoint",
    source="neuroailab/convrnns (TF1 checkpoint, V2 format; no hashes are published)",
    filename="convrnn_rgc_intermediate/model.ckpt.index",
    extra_files=((f"{_CHECKPOINT_URL}.data-00000-of-00001", "",
                  "convrnn_rgc_intermediate/model.ckpt.data-00000-of-00001"),),
)

CARD = ModelCard(
    name="convrnn",
    display_name="ConvRNN",
    family="ConvRNN",
    recurrence="within-layer + top-down",
    mechanism="gated",
    loss_timing="final step",
    counterpart=None,
    step_unit="t",
    default_steps=DEFAULT_STEPS,
    readouts=READOUTS,
    headline_readout="logits",
    states={"baseline": 16, "after": 17, "image_off": DEFAULT_IMAGE_OFF},
    preprocessing={"full": preprocess.imagenet(224, 256), "mini": preprocess.mini_imagenet(64)},
    official_weights=OFFICIAL_WEIGHTS,
    colors=("#B33B72", "#BF6B99"),
    reference="Nayebi, Bear, Kubilius et al. (2018), NeurIPS; Nayebi et al. (2022), Neural "
              "Computation 34:1652 (model rgc_intermediate)",
    notes=(
        "Step t is the official 0-based time index t-1. Every edge has a one-step delay, so "
        "conv K first sees the image at t=K and the logits at t=11; before that outputs are "
        "bias-driven and the same for every image. By default the image is shown for t=1..12 "
        "and the blank value 0.5 (normalised input space) for t=13..17; the official loss is on "
        "the final step. The reference study compared t=16 with t=17 and, in its supplement, "
        "t=12 (image_off) with t=17. No hashes are published for the official checkpoint, so "
        "it is not downloaded automatically: pass weights=<checkpoint prefix>."
    ),
    build_options={"presentation": "default", "image_off": DEFAULT_IMAGE_OFF},
)

register(CARD, build=build, load_checkpoint=load_checkpoint)
