"""DSRNA search space: the DARTS space (Hosseini, Yang, Xie, "DSRNA: Differentiable
Search of Robust Neural Architectures", CVPR 2021; Liu et al., DARTS, ICLR 2019)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Optional

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

    Example::

        space = DSRNASpace(input_shape=(1, 8, 8), num_classes=10, width=8, num_cells=3)
        model = space.freeze(space.random())
    """

    space_name: ClassVar[str] = "dsrna"
    op_names: ClassVar[tuple[str, ...]] = DARTS_OPS
    cell_labels: ClassVar[tuple[str, ...]] = ("normal", "reduce")
    channel_ratio: ClassVar[tuple[int, int, int]] = (1, 2, 4)
    min_cells: ClassVar[int] = 3

    def __init__(
        self,
        *,
        input_shape: Sequence[int] = (3, 32, 32),
        num_classes: int = 10,
        width: int = 16,
        num_cells: int = 8,
        auxiliary: bool = False,
        dropout: float = 0.0,
        drop_path_prob: float = 0.0,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
    ) -> None:
        super().__init__(input_shape=input_shape, num_classes=num_classes, width=width,
                         num_cells=num_cells, auxiliary=auxiliary, dropout=dropout,
                         drop_path_prob=drop_path_prob, mean=mean, std=std)

    @classmethod
    def cell_label(cls, index: int, num_cells: int) -> str:
        """Every non-reduction cell is a ``normal`` cell."""
        return "normal"
