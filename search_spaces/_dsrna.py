"""DSRNA search space: the DARTS space (Hosseini, Yang, Xie, "DSRNA: Differentiable
Search of Robust Neural Architectures", CVPR 2021; Liu et al., DARTS, ICLR 2019)."""

from __future__ import annotations

from typing import ClassVar

from ._cell_space import DartsCellSpace
from ._ops import DARTS_OPS

__all__ = ["DSRNASpace"]


class DSRNASpace(DartsCellSpace):
    """The standard DARTS space that DSRNA searches (Hosseini et al., CVPR 2021).

    8 operations including ``none`` (a zero op), ``normal`` and ``reduce`` cells
    (reductions at ``L//3`` and ``2L//3``), channels 1 : 2 : 4, stem multiplier 3,
    4 intermediate nodes. Defaults are the search network (``width=16``,
    ``num_cells=8``); the evaluation network is ``width=36, num_cells=20``.
    Forward returns logits; with ``auxiliary=True`` in training mode it returns
    ``(logits, aux_logits)``. Stem for every input size is DARTS' CIFAR stem
    (docs/fidelity.md, "Search spaces").

    Note: ``none`` is an explicit candidate, so a sample may choose it; DARTS'
    derivation never does (NNI's DARTS export may).

    Example (DARTS' own cell, V2, on digits' 1x8x8 inputs):

    >>> import torch
    >>> from robustnas.search_spaces import DSRNASpace, named_architecture
    >>> space = DSRNASpace(input_shape=(1, 8, 8), num_classes=10, width=8, num_cells=3)
    >>> darts_v2 = named_architecture("dsrna", "darts_v2")
    >>> space.freeze(darts_v2)(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """

    space_name: ClassVar[str] = "dsrna"
    op_names: ClassVar[tuple[str, ...]] = DARTS_OPS
    cell_labels: ClassVar[tuple[str, ...]] = ("normal", "reduce")
    channel_ratio: ClassVar[tuple[int, int, int]] = (1, 2, 4)
    min_cells: ClassVar[int] = 3
    default_width: ClassVar[int] = 16

    @classmethod
    def cell_label(cls, index: int, num_cells: int) -> str:
        """Every non-reduction cell is a ``normal`` cell."""
        return "normal"
