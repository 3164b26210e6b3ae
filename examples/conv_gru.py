"""A small recurrent vision model in plain PyTorch, and the lines that plug it in.

``ConvGRUNet`` knows nothing of this package: a convolutional stem reads the image once, then
two convolutional GRU cells (Ballas et al. 2016, ``arXiv:1511.06432``) update their hidden maps
for ``steps`` steps, the lower cell driven by the stem and the upper by the lower cell's map, and
a linear classifier reads the upper cell's pooled map at every step. ``forward`` returns the
logits of every step, stacked ``[T, N, classes]``, as a model trained with the loss on all steps
does.

The last lines register it: ``plugins.register_model`` wraps it in the time-resolved adapter,
which records every call of ``cell2`` (penult), ``classifier`` (logits) and ``cell1`` (one more
area) as one step; its trained weights live in ``examples/trained/``, written there by the
project's trainer. Analyse it with ``-p plugins examples.conv_gru -p models conv_gru,bl``.
"""

from __future__ import annotations

import torch
from torch import nn


class ConvGRUCell(nn.Module):
    """h' = (1 - z) * h + z * tanh(W * [x, r * h]), with z and r sigmoid gates of [x, h]."""

    def __init__(self, in_channels: int, hidden: int, kernel_size: int = 3):
        super().__init__()
        padding = kernel_size // 2
        self.hidden = hidden
        self.gates = nn.Conv2d(in_channels + hidden, 2 * hidden, kernel_size, padding=padding)
        self.candidate = nn.Conv2d(in_channels + hidden, hidden, kernel_size, padding=padding)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        z, r = torch.sigmoid(self.gates(torch.cat([x, h], dim=1))).chunk(2, dim=1)
        candidate = torch.tanh(self.candidate(torch.cat([x, r * h], dim=1)))
        return (1 - z) * h + z * candidate


class ConvGRUNet(nn.Module):
    """Stem (64 px -> 16 px maps), two ConvGRU cells (16 and 8 px), a linear classifier."""

    def __init__(self, num_classes: int = 100, steps: int = 5, width: int = 32):
        super().__init__()
        self.steps = steps
        self.stem = nn.Sequential(nn.Conv2d(3, width // 2, 5, stride=2, padding=2),
                                  nn.BatchNorm2d(width // 2), nn.ReLU(), nn.MaxPool2d(2))
        self.cell1 = ConvGRUCell(width // 2, width)
        self.pool = nn.MaxPool2d(2)
        self.cell2 = ConvGRUCell(width, 2 * width)
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        drive = self.stem(x)
        h1 = drive.new_zeros(drive.shape[0], self.cell1.hidden, *drive.shape[2:])
        h2 = drive.new_zeros(drive.shape[0], self.cell2.hidden, *self.pool(h1).shape[2:])
        logits = []
        for _ in range(self.steps):
            h1 = self.cell1(drive, h1)
            h2 = self.cell2(self.pool(h1), h2)
            logits.append(self.classifier(h2.mean(dim=(2, 3))))
        return torch.stack(logits)


# ---------------------------------------------------------------- plugging it in: these lines

from pathlib import Path  # noqa: E402

from analysis_utils import plugins  # noqa: E402  (the model above needs nothing from us)
from analysis_utils.catalogue import NUM_CLASSES  # noqa: E402

plugins.register_model(
    "conv_gru",
    build=lambda scale, steps: ConvGRUNet(num_classes=NUM_CLASSES[scale], steps=steps),
    readouts={"penult": "cell2", "logits": "classifier", "gru1": "cell1"},
    steps=5,
    display_name="ConvGRU (example)",
    recurrence="within-layer",
    mechanism="gated",
    loss_timing="all steps",
    reference="examples/conv_gru.py: a user's model, registered through the adapter",
    # where `python -m analysis_utils train --model conv_gru --plugins examples.conv_gru`
    # writes its weights and weights="trained" reads them
    trained_dir=Path(__file__).parent / "trained",
)
