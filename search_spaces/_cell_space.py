"""DARTS-style cell network as an NNI ``ModelSpace`` (shared by ARNAS and DSRNA).

The network follows DARTS (Liu et al., ICLR 2019, ``cnn/model.py``): a 3x3 stem
with ``stem_multiplier * width`` channels, ``num_cells`` cells, reduction cells
at ``num_cells // 3`` and ``2 * num_cells // 3``, global average pooling and a
linear classifier. Every cell is an ``nni.nas.nn.pytorch.Cell`` with 4
intermediate nodes, 2 inputs per node and the concatenation of the 4 nodes as
output; the preprocessor/postprocessor are NNI's NASNet ones. Cells that share
a label share their choices (``<label>/op_<node>_<k>``, ``<label>/input_<node>_<k>``,
nodes numbered from 2 because 0 and 1 are the two cell inputs).

Subclasses only say which operations are candidates, how cells are labelled
and how channels grow at each reduction.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any, ClassVar, NamedTuple, Optional

import torch
from nni.mutable import Sample
from nni.nas.hub.pytorch.nasnet import CellPostprocessor, CellPreprocessor
from nni.nas.hub.pytorch.utils.nn import DropPath
from nni.nas.nn.pytorch import Cell, ModelSpace
from nni.nas.space import model_context
from torch import nn

from ._ops import AuxiliaryHead, Normalize, check_normalization, make_op

__all__ = ["CellSpec", "DartsCellSpace"]

NUM_NODES = 4
NUM_INPUTS_PER_NODE = 2
NUM_PREDECESSORS = 2
STEM_MULTIPLIER = 3


class CellSpec(NamedTuple):
    """Where one cell sits in the network."""

    index: int
    label: str
    reduction: bool
    channels: int  # channels of every operation in the cell (output: 4x this)
    resolution: tuple[int, int]  # output height and width


def _reduced(size: int) -> int:
    # Every stride-2 candidate (pools pad 1, convs pad k//2, FactorizedReduce) gives ceil(size / 2).
    return (size + 1) // 2


class DartsCellSpace(ModelSpace):
    """Base of the DARTS-style cell spaces; use :class:`ARNASSpace` or :class:`DSRNASpace`.

    Forward returns the logits ``(B, num_classes)``; only when ``auxiliary=True``
    and the module is in training mode it returns ``(logits, auxiliary_logits)``
    as DARTS does. A subclass sets the class attributes below and keeps this constructor;
    ``width=None`` is the subclass's :attr:`default_width`.
    """

    space_name: ClassVar[str] = ""
    #: Candidate operation names (keys of ``nni.nas.hub.pytorch.nasnet.OPS``).
    op_names: ClassVar[tuple[str, ...]] = ()
    #: Labels of the cell types, in the order used by :func:`genotype`.
    cell_labels: ClassVar[tuple[str, ...]] = ()
    #: Channel multiplier of the operations in stage 0, 1, 2 (stage k follows reduction k).
    channel_ratio: ClassVar[tuple[int, int, int]] = (1, 2, 4)
    #: Smallest number of cells for which every cell label occurs.
    min_cells: ClassVar[int] = 3
    #: Operation channels of the first stage when ``width`` is not given (the paper's search network).
    default_width: ClassVar[int] = 16

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # A subclass that keeps this constructor keeps NNI's wrapper of it: wrapping it once more
        # would hide the signature (and so the defaults) from NNI's ``args``.
        kwargs.setdefault("disable_init_wrapper", "__init__" not in cls.__dict__)
        super().__init_subclass__(**kwargs)

    def __init__(
        self,
        *,
        input_shape: Sequence[int] = (3, 32, 32),
        num_classes: int = 10,
        width: Optional[int] = None,
        num_cells: int = 8,
        auxiliary: bool = False,
        dropout: float = 0.0,
        drop_path_prob: float = 0.0,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
    ) -> None:
        super().__init__()
        width = self.default_width if width is None else width
        self._space_kwargs = self._check_arguments(
            input_shape=input_shape, num_classes=num_classes, width=width, num_cells=num_cells,
            auxiliary=auxiliary, dropout=dropout, drop_path_prob=drop_path_prob, mean=mean, std=std,
        )
        in_channels, height, width_px = self._space_kwargs["input_shape"]
        self.num_classes = num_classes
        self.auxiliary = auxiliary
        self.plan = self.cell_plan(num_cells, width, (height, width_px))

        self.normalize: nn.Module = Normalize(mean, std) if mean is not None and std is not None else nn.Identity()
        stem_channels = STEM_MULTIPLIER * width
        # CIFAR stem of DARTS (3x3, stride 1) for every input size: docs/fidelity.md "Search spaces".
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(stem_channels),
        )

        c_pprev, c_prev = stem_channels, stem_channels
        last_reduction = False
        self.cells = nn.ModuleList()
        self._aux_index = 2 * num_cells // 3
        aux_channels, aux_resolution = c_prev, height
        for spec in self.plan:
            preprocessor = CellPreprocessor(c_pprev, c_prev, spec.channels, last_reduction)
            factories = {
                name: partial(self._op_factory, op=name, channels=spec.channels,
                              reduction=spec.reduction, drop_path_prob=drop_path_prob)
                for name in self.op_names
            }
            cell = Cell(factories, NUM_NODES, NUM_INPUTS_PER_NODE, NUM_PREDECESSORS, "all",
                        preprocessor=preprocessor, postprocessor=CellPostprocessor(), label=spec.label)
            self.cells.append(cell)
            c_pprev, c_prev = c_prev, NUM_NODES * spec.channels
            last_reduction = spec.reduction
            if spec.index == self._aux_index:
                aux_channels, aux_resolution = c_prev, spec.resolution[0]

        self.auxiliary_head: Optional[nn.Module] = (
            AuxiliaryHead(aux_channels, num_classes, aux_resolution) if auxiliary else None
        )
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(c_prev, num_classes)

    # ------------------------------------------------------------------ layout
    @classmethod
    def cell_label(cls, index: int, num_cells: int) -> str:
        """Label of the (non-reduction) cell at ``index``; subclasses decide."""
        raise NotImplementedError

    @staticmethod
    def reduction_indices(num_cells: int) -> tuple[int, int]:
        """Indices of the two reduction cells, as in DARTS: ``L // 3`` and ``2L // 3``."""
        return num_cells // 3, 2 * num_cells // 3

    @classmethod
    def cell_plan(cls, num_cells: int, width: int, resolution: tuple[int, int]) -> list[CellSpec]:
        """Label, reduction flag, operation channels and output resolution of every cell."""
        reductions = cls.reduction_indices(num_cells)
        height, wid = resolution
        stage = 0
        plan = []
        for index in range(num_cells):
            reduction = index in reductions
            if reduction:
                stage += 1
                height, wid = _reduced(height), _reduced(wid)
            label = "reduce" if reduction else cls.cell_label(index, num_cells)
            plan.append(CellSpec(index, label, reduction, width * cls.channel_ratio[stage], (height, wid)))
        return plan

    # ------------------------------------------------------------------ building
    @staticmethod
    def _op_factory(node_index: int, op_index: int, input_index: Optional[int], *, op: str,
                    channels: int, reduction: bool, drop_path_prob: float) -> nn.Module:
        # Edges from the two cell inputs of a reduction cell have stride 2 (DARTS).
        # ``input_index`` is None while the space is built (not yet chosen).
        stride = 2 if reduction and (input_index is None or input_index < NUM_PREDECESSORS) else 1
        return make_op(op, channels, stride, drop_path_prob)

    @classmethod
    def _check_arguments(cls, *, input_shape: Sequence[int], num_classes: int, width: int,
                         num_cells: int, auxiliary: bool, dropout: float, drop_path_prob: float,
                         mean: Optional[Sequence[float]], std: Optional[Sequence[float]]) -> dict[str, Any]:
        shape = tuple(input_shape)
        if len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
            raise ValueError(f"input_shape must be (channels, height, width) of positive ints, got {input_shape!r}")
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        if not isinstance(width, int) or width < 2 or width % 2:
            raise ValueError(f"width must be an even int >= 2 (FactorizedReduce halves it), got {width!r}")
        if not isinstance(num_cells, int) or num_cells < cls.min_cells:
            raise ValueError(
                f"num_cells must be an int >= {cls.min_cells} so that every cell type "
                f"{list(cls.cell_labels)} occurs, got {num_cells!r}"
            )
        reductions = len(cls.reduction_indices(num_cells))
        if min(shape[1:]) < 2 ** reductions:
            raise ValueError(
                f"input_shape {shape} is too small for {reductions} stride-2 reductions: "
                f"height and width must be >= {2 ** reductions}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if not 0.0 <= drop_path_prob < 1.0:
            raise ValueError(f"drop_path_prob must be in [0, 1), got {drop_path_prob!r}")
        check_normalization(mean, std, shape[0])
        return {
            "input_shape": list(shape),
            "num_classes": num_classes,
            "width": width,
            "num_cells": num_cells,
            "auxiliary": bool(auxiliary),
            "dropout": float(dropout),
            "drop_path_prob": float(drop_path_prob),
            "mean": None if mean is None else [float(m) for m in mean],
            "std": None if std is None else [float(s) for s in std],
        }

    # ------------------------------------------------------------------ API
    @property
    def space_kwargs(self) -> dict[str, Any]:
        """The constructor keyword arguments as a JSON-serialisable dict (a copy)."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self._space_kwargs.items()}

    def freeze(self, sample: Sample) -> "DartsCellSpace":
        """A fixed network for ``sample``: the space is rebuilt with the same arguments.

        As NNI's ``NDS.freeze``: the cells depend on each other (reduction strides
        depend on the chosen inputs), so the whole model is recreated; weights are new.
        """
        with model_context(sample):
            return type(self)(**self.space_kwargs)

    def set_drop_path_prob(self, drop_prob: float) -> None:
        """Set the drop-path probability of every operation (DARTS schedules it per epoch)."""
        for module in self.modules():
            if isinstance(module, DropPath):
                module.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> Any:
        x = self.normalize(x)
        s0 = s1 = self.stem(x)
        aux_logits = None
        for index, cell in enumerate(self.cells):
            s0, s1 = cell([s0, s1])
            if index == self._aux_index and self.auxiliary_head is not None and self.training:
                aux_logits = self.auxiliary_head(s1)
        out = self.global_pooling(s1).flatten(1)
        logits = self.classifier(self.dropout(out))
        if aux_logits is not None:
            return logits, aux_logits
        return logits
