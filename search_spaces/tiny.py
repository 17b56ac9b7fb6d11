"""TAM-NAS' tiny robust search space (Xie, Wang, Yu, Zheng, Jin, arXiv 2103.00363).

A stem, then ``L`` searchable layers in stages (stride 2 at the first layer of
every stage but the first), each layer choosing one tiny block and its output
width, then global pooling and a linear classifier. Labels: ``layer<i>/block``
and ``layer<i>/width`` (``i`` counts layers over the whole network).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar, Optional

import nni
import torch
from nni.mutable import Sample, label_scope
from nni.nas.nn.pytorch import LayerChoice, ModelSpace, MutableLinear
from torch import nn

from ._ops import Normalize, check_normalization
from ._tiny_ops import BLOCKS, ONESHOT_HOOKS, SKIP, make_block

__all__ = ["TinyRobustSpace", "DEFAULT_STAGES", "BLOCK_NAMES"]

_logger = logging.getLogger(__name__)

#: Candidate block names, in the order of the ``layer<i>/block`` choices.
BLOCK_NAMES: tuple[str, ...] = tuple(BLOCKS)

#: Default stages ``(depth, channels, stride)`` for CIFAR-sized inputs (about 10 K to 2 M parameters).
DEFAULT_STAGES: tuple[tuple[int, int, int], ...] = ((2, 24, 1), (3, 48, 2), (3, 96, 2), (2, 208, 2))

#: Default per-layer width choices, as fractions of the stage's channels.
DEFAULT_WIDTH_CHOICES: tuple[float, ...] = (0.5, 0.75, 1.0)


def _round_channels(value: float, divisor: int = 4) -> int:
    return max(divisor, int(round(value / divisor)) * divisor)


class TinyRobustSpace(ModelSpace):
    """Layer-wise tiny-block and channel search space of TAM-NAS (Xie et al., arXiv 2103.00363).

    Each layer picks one block from :data:`BLOCK_NAMES` (MobileNetV2 inverted
    residual with expansion 1/3/6 and kernel 3/5, depthwise-separable conv with
    kernel 3/5, ResNet basic block, and a parameter-free ``skip`` on every layer
    that is not the first of its stage) and an output width among
    ``width_choices`` x the stage's channels. At CIFAR shape the default space
    spans about 10 K to 2 M parameters (:meth:`smallest_sample`,
    :meth:`largest_sample`). Normalisation (``mean``/``std``) is inside the model;
    forward returns logits.

    The exact block list, channels and depth of the paper are unknown; this
    list is the project's own (docs/fidelity.md, "TinyRobustSpace (TAM-NAS)").

    Works with NNI's single-path one-shot strategies (``RandomOneShot``,
    :class:`~robustnas.strategies.TAMNAS`): block choices become path-sampling
    layers, widths become weight-entangled mixed convolutions, and
    ``space.freeze(sample)`` of a trained supernet inherits its weights.

    Example (a random architecture, on digits' 1x8x8 inputs):

    >>> import torch
    >>> from robustnas.search_spaces import TinyRobustSpace, random_sample
    >>> space = TinyRobustSpace(input_shape=(1, 8, 8), num_classes=10)
    >>> model = space.freeze(random_sample(space, seed=0))
    >>> model(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """

    space_name: ClassVar[str] = "tiny"

    def __init__(
        self,
        *,
        input_shape: Sequence[int] = (3, 32, 32),
        num_classes: int = 10,
        stages: Sequence[Sequence[int]] = DEFAULT_STAGES,
        width_multiplier: float = 1.0,
        width_choices: Sequence[float] = DEFAULT_WIDTH_CHOICES,
        blocks: Optional[Sequence[str]] = None,
        stem_channels: Optional[int] = None,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
    ) -> None:
        super().__init__()
        self._space_kwargs = self._check_arguments(
            input_shape=input_shape, num_classes=num_classes, stages=stages, width_multiplier=width_multiplier,
            width_choices=width_choices, blocks=blocks, stem_channels=stem_channels, mean=mean, std=std,
        )
        kw = self._space_kwargs
        in_channels, height, _ = kw["input_shape"]
        self.num_classes = num_classes
        self.normalize: nn.Module = Normalize(mean, std) if mean is not None and std is not None else nn.Identity()
        stem = kw["stem_channels"]
        # Stride-1 stem up to CIFAR size, stride 2 above (docs/fidelity.md).
        stem_stride = 1 if height <= 32 else 2
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem, 3, stride=stem_stride, padding=1, bias=False),
            nn.BatchNorm2d(stem),
            nn.ReLU(inplace=True),
        )
        self.layer_plan: list[dict[str, Any]] = []
        layers: list[nn.Module] = []
        prev: Any = stem
        index = 0
        for stage, (depth, channels, stride) in enumerate(kw["stages"]):
            base = channels * kw["width_multiplier"]
            widths = sorted({_round_channels(base * f) for f in kw["width_choices"]})
            for position in range(depth):
                layer_stride = stride if position == 0 else 1
                names = [b for b in kw["blocks"] if b != SKIP or position > 0]
                with label_scope(f"layer{index}"):
                    width = nni.choice("width", widths) if len(widths) > 1 else widths[0]
                    candidates = {name: make_block(name, prev, width, layer_stride) for name in names}
                    layers.append(LayerChoice(candidates, label="block"))
                self.layer_plan.append({"index": index, "stage": stage, "stride": layer_stride,
                                        "blocks": names, "widths": widths})
                prev = width
                index += 1
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = MutableLinear(in_features=prev, out_features=num_classes)
        _logger.debug("TinyRobustSpace %s: %d layers, %d labels", kw["input_shape"], index, 2 * index)

    # ------------------------------------------------------------------ arguments
    @staticmethod
    def _check_arguments(*, input_shape: Sequence[int], num_classes: int, stages: Sequence[Sequence[int]],
                         width_multiplier: float, width_choices: Sequence[float], blocks: Optional[Sequence[str]],
                         stem_channels: Optional[int], mean: Optional[Sequence[float]],
                         std: Optional[Sequence[float]]) -> dict[str, Any]:
        shape = tuple(input_shape)
        if len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
            raise ValueError(f"input_shape must be (channels, height, width) of positive ints, got {input_shape!r}")
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        stage_list = [tuple(int(v) for v in s) for s in stages]
        if not stage_list or any(len(s) != 3 for s in stage_list):
            raise ValueError(f"stages must be a non-empty list of (depth, channels, stride), got {stages!r}")
        for depth, channels, stride in stage_list:
            if depth < 1 or channels < 1 or stride not in (1, 2):
                raise ValueError(f"stage (depth={depth}, channels={channels}, stride={stride}) is invalid: "
                                 "depth >= 1, channels >= 1 and stride in (1, 2)")
        if not width_multiplier > 0:
            raise ValueError(f"width_multiplier must be positive, got {width_multiplier!r}")
        fractions = [float(f) for f in width_choices]
        if not fractions or any(not 0 < f <= 4 for f in fractions):
            raise ValueError(f"width_choices must be fractions in (0, 4], got {list(width_choices)!r}")
        block_list = list(BLOCK_NAMES if blocks is None else blocks)
        unknown = [b for b in block_list if b not in BLOCKS]
        if unknown or not [b for b in block_list if b != SKIP]:
            raise ValueError(f"blocks must name at least one non-skip block; unknown {unknown}, "
                             f"valid blocks: {list(BLOCK_NAMES)}")
        stem = stem_channels if stem_channels is not None else _round_channels(stage_list[0][1] * width_multiplier)
        if not isinstance(stem, int) or stem < 1:
            raise ValueError(f"stem_channels must be a positive int, got {stem_channels!r}")
        check_normalization(mean, std, shape[0])
        return {
            "input_shape": list(shape),
            "num_classes": num_classes,
            "stages": [list(s) for s in stage_list],
            "width_multiplier": float(width_multiplier),
            "width_choices": fractions,
            "blocks": block_list,
            "stem_channels": stem,
            "mean": None if mean is None else [float(m) for m in mean],
            "std": None if std is None else [float(s) for s in std],
        }

    @property
    def space_kwargs(self) -> dict[str, Any]:
        """The constructor keyword arguments as a JSON-serialisable dict (a copy)."""
        return {k: ([list(x) if isinstance(x, list) else x for x in v] if isinstance(v, list) else v)
                for k, v in self._space_kwargs.items()}

    # ------------------------------------------------------------------ NNI one-shot
    def extra_oneshot_hooks(self, strategy: Any) -> list[Any]:
        """Mutation hooks for NNI one-shot strategies: the width-fitted ``skip`` and a
        bias-free-safe mixed convolution (see ``_tiny_ops``)."""
        return list(ONESHOT_HOOKS)

    # ------------------------------------------------------------------ samples
    def _extreme_sample(self, largest: bool) -> Sample:
        sample: dict[str, Any] = {}
        for plan in self.layer_plan:
            if len(plan["widths"]) > 1:
                sample[f"layer{plan['index']}/width"] = plan["widths"][-1 if largest else 0]
            sample[f"layer{plan['index']}/block"] = None
        for plan, layer in zip(self.layer_plan, self.layers):
            index = plan["index"]
            counts = {}
            for name in plan["blocks"]:
                trial = {**sample, f"layer{index}/block": name}
                # Earlier layers' blocks do not change this layer's size; fill them to freeze.
                trial = {k: (v if v is not None else plan["blocks"][0]) for k, v in trial.items()}
                with torch.device("meta"), warnings.catch_warnings():  # sizes only: no memory, no init
                    warnings.filterwarnings("ignore", message=".*meta parameter.*")  # a supernet's weights
                    module = layer.freeze(trial)
                counts[name] = sum(p.numel() for p in module.parameters())
            pick = max if largest else min
            sample[f"layer{index}/block"] = pick(counts, key=lambda n: (counts[n], n))
        return sample

    def smallest_sample(self) -> Sample:
        """The architecture with the fewest parameters (narrowest widths, cheapest block per layer)."""
        return self._extreme_sample(largest=False)

    def largest_sample(self) -> Sample:
        """The architecture with the most parameters (widest widths, largest block per layer)."""
        return self._extreme_sample(largest=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(self.normalize(x))
        x = self.layers(x)
        return self.classifier(self.pool(x).flatten(1))
