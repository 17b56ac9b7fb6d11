"""ARNAS search space (Ou, Feng, Sun, "Towards Accurate and Robust Architectures via
Neural Architecture Search", CVPR 2024)."""

from __future__ import annotations

from typing import ClassVar

from ._cell_space import DartsCellSpace
from ._ops import ARNAS_OPS

__all__ = ["ARNASSpace"]


class ARNASSpace(DartsCellSpace):
    """ARNAS' DARTS-style space with three cell types (Ou et al., CVPR 2024).

    Cells below ``2L/3`` are ``accurate`` cells, the two reduction cells at ``L//3``
    and ``2L//3`` share the ``reduce`` choices, the cells after ``2L/3`` are ``robust``
    cells; each type has its own 14 edges x 7 operations (no ``none``). Channels
    grow 1 : 2 : 2 (the second reduction halves the resolution, keeps the channels).
    Stem multiplier 3, 4 intermediate nodes, output = concat of the 4 nodes.

    Defaults are the search network of the paper (``width=24``, ``num_cells=8``);
    the final CIFAR-10 network is ``width=64, num_cells=20``. Forward returns logits;
    with ``auxiliary=True`` in training mode it returns ``(logits, aux_logits)``.
    Stem for every input size is DARTS' CIFAR stem (docs/fidelity.md, "Search spaces").

    Example (a random architecture of a small space, on digits' 1x8x8 inputs):

    >>> import torch
    >>> from robustnas.search_spaces import ARNASSpace, random_sample
    >>> space = ARNASSpace(input_shape=(1, 8, 8), num_classes=10, width=8, num_cells=4)
    >>> model = space.freeze(random_sample(space, seed=0))
    >>> model(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """

    space_name: ClassVar[str] = "arnas"
    op_names: ClassVar[tuple[str, ...]] = ARNAS_OPS
    cell_labels: ClassVar[tuple[str, ...]] = ("accurate", "reduce", "robust")
    channel_ratio: ClassVar[tuple[int, int, int]] = (1, 2, 2)
    min_cells: ClassVar[int] = 4
    default_width: ClassVar[int] = 24

    @classmethod
    def cell_label(cls, index: int, num_cells: int) -> str:
        """``accurate`` below ``2L/3``, ``robust`` after it (reductions are labelled first)."""
        return "accurate" if 3 * index < 2 * num_cells else "robust"
