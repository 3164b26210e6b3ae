"""The contract every catalogue model keeps, and small helpers the families share.

A :class:`TimeResolvedModel` returns **every time step** from ``readouts(x, names)``:
``{readout: Tensor[T, N, D]}`` in float32, where index ``i`` along T is step ``t = i + 1``.
Spatial maps are pooled (global average) inside the pass, as each step is computed, so unpooled
maps of all steps are never held at once. ``forward(x)`` returns the logits of the final step,
so a catalogue model also works as an ordinary classifier.

Family modules implement ``_readouts(x, names)`` with the time loop written out, use
:class:`StepRecorder` to pool and stack, and call :func:`load_state_dict_strict` for checkpoints
so every bad checkpoint gets the same kind of message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from ..errors import AnalysisUtilsError


def global_average(x: torch.Tensor) -> torch.Tensor:
    """Pool a feature map [N, C, H, W] to [N, C]; a [N, D] tensor passes through."""
    if x.dim() == 4:
        return x.mean(dim=(2, 3))
    if x.dim() == 2:
        return x
    raise ValueError(f"Expected a [N, C, H, W] or [N, D] tensor, got shape {tuple(x.shape)}.")


class StepRecorder:
    """Collects pooled readouts step by step and stacks them to ``{name: [T, N, D]}``."""

    def __init__(self, names: Iterable[str]):
        self.names = tuple(names)
        self.steps: dict[str, list[torch.Tensor]] = {name: [] for name in self.names}

    def wants(self, name: str) -> bool:
        return name in self.steps

    def add(self, name: str, value: torch.Tensor) -> None:
        """Pool ``value`` and append it for the current step, if ``name`` was requested."""
        if name in self.steps:
            self.steps[name].append(global_average(value).float())

    def stacked(self) -> dict[str, torch.Tensor]:
        return {name: torch.stack(values, dim=0) for name, values in self.steps.items()}


class TimeResolvedModel(nn.Module):
    """Base class: a vision model whose readouts are returned at every time step."""

    #: readouts every model has: the feature stage and the decision stage
    STAGES = ("penult", "logits")

    def __init__(self, n_steps: int, readout_names: Iterable[str]):
        super().__init__()
        if int(n_steps) < 1:
            raise AnalysisUtilsError(f"The number of steps must be at least 1, got {n_steps}.")
        self.n_steps = int(n_steps)
        self.readout_names = tuple(readout_names)

    def check_readouts(self, names: Iterable[str] | str | None) -> tuple[str, ...]:
        """Validate requested readout names; ``None`` means all of them."""
        if names is None:
            return self.readout_names
        if isinstance(names, str):
            names = (names,)
        names = tuple(names)
        for name in names:
            if name not in self.readout_names:
                valid = ", ".join(self.readout_names)
                raise AnalysisUtilsError(
                    f"Unknown readout {name!r} for {type(self).__name__}; expected one of: {valid}."
                )
        if not names:
            raise AnalysisUtilsError(
                "Ask for at least one readout, for example ('penult', 'logits')."
            )
        return names

    def check_input(self, x) -> None:
        """Refuse, in one sentence, anything but a batch of images as the card's preprocessing
        makes them: a float tensor [N, 3, S, S] with S the card's input size at this scale.

        A catalogue model (built by ``catalogue.build`` or ``load``, which give it ``card`` and
        ``scale``) is checked against its card; its features mean what the card says only for
        that input. A model built outside the catalogue has no card and checks its own input.
        The messages are built only on failure, so a compiled training step sees only the
        comparisons.
        """
        card = getattr(self, "card", None)
        if card is None:
            return
        size = card.input_size(self.scale)
        if not isinstance(x, torch.Tensor):
            raise self._input_error(size, f"got a {type(x).__name__}",
                                    "to each image and stack them with torch.stack")
        if x.dim() != 4:
            raise self._input_error(size, f"got shape {tuple(x.shape)}",
                                    "to each image and stack them into one 4-D tensor (a "
                                    "single image [3, H, W] as x.unsqueeze(0))")
        if x.shape[1] != 3:
            channels = f"{x.shape[1]} colour channel" + ("" if x.shape[1] == 1 else "s")
            raise self._input_error(size, f"got {channels} (shape {tuple(x.shape)})",
                                    "to each image: it converts it to RGB (3 channels) first, "
                                    "as PIL's image.convert('RGB')")
        if x.shape[2] != size or x.shape[3] != size:
            raise self._input_error(size, f"got {x.shape[2]} x {x.shape[3]} px (shape "
                                    f"{tuple(x.shape)})", "to each image, as extract.features "
                                    "does")
        if not x.is_floating_point():
            raise self._input_error(size, f"got dtype {x.dtype}", "to each image: it scales "
                                    "and normalises the pixels to floating point")

    def _input_error(self, size: int, got: str, fix: str) -> AnalysisUtilsError:
        """One sentence: what the card expects, what came, and the preprocessing that fixes it."""
        card = self.card
        return AnalysisUtilsError(
            f"{card.display_name} at {self.scale} scale expects RGB images [N, 3, {size}, "
            f"{size}] in floating point, {got}; apply catalogue.card({card.name!r})"
            f".preprocessing[{self.scale!r}] ({card.preprocessing[self.scale].describe()}) "
            f"{fix}."
        )

    def readouts(self, x: torch.Tensor, names: Iterable[str] | str | None = None
                 ) -> dict[str, torch.Tensor]:
        """``{readout: Tensor[T, N, D]}`` for every step t = 1..T of the batch ``x``.

        ``x`` must be a batch as the card's preprocessing makes it (see :meth:`check_input`).
        """
        self.check_input(x)
        return self._readouts(x, self.check_readouts(names))

    def _readouts(self, x: torch.Tensor, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the final step, [N, classes]."""
        return self.readouts(x, ("logits",))["logits"][-1]


def load_state_dict_strict(model: nn.Module, state: Mapping[str, torch.Tensor],
                           source: str) -> None:
    """Load ``state`` into ``model`` exactly, or raise one sentence naming the first bad key.

    Checks, in order: keys the model needs that the checkpoint lacks, keys the checkpoint has that
    the model does not, and tensors whose shape differs.
    """
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    if missing:
        raise AnalysisUtilsError(
            f"The checkpoint {source} lacks the key {missing[0]!r} ({len(missing)} missing in "
            "all); it is not a checkpoint of this model and scale: check the model name, scale "
            "and file."
        )
    unexpected = [key for key in state if key not in expected]
    if unexpected:
        raise AnalysisUtilsError(
            f"The checkpoint {source} has the unexpected key {unexpected[0]!r} "
            f"({len(unexpected)} in all); it is not a checkpoint of this model and scale."
        )
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise AnalysisUtilsError(
                f"The checkpoint {source} gives {key!r} the shape {tuple(state[key].shape)}, "
                f"but the model needs {tuple(tensor.shape)}; check that the scale ('mini' or "
                "'full') matches the file."
            )
    model.load_state_dict({key: state[key] for key in expected}, strict=True)
