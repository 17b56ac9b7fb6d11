"""The NAS-Bench-201 cell space at small input sizes, the space of the robustness benchmark.

The cell is NAS-Bench-201's (Dong and Yang, ICLR 2020): 4 nodes, 6 edges ``i -> j``
(``i < j``), each edge one of ``none``, ``skip_connect``, ``conv_1x1``, ``conv_3x3``,
``avg_pool_3x3``; every cell of the network shares the same 6 choices. The network is
NNI's hub :class:`~nni.nas.hub.pytorch.NasBench201` (stem, three stages of
``cells_per_stage`` cells, two ResNet reduction blocks, global pooling, linear
classifier) with the stem taking any channel count, so 1x8x8 digits or 1x28x28 MNIST
build as well as 3x32x32 CIFAR.

15,625 label assignments fall into 6,466 classes of functionally identical cells by
NAS-Bench-201's own rule (``CellStructure.to_unique_str(consider_zero=True)`` of the
benchmark's API): a ``none`` edge or an edge out of a zero node contributes zero, a
skip connection passes its input's expression unchanged, and the inputs of a node are
summed in sorted order. :func:`canonical_key` gives that class, :func:`canonical_sample`
its representative (the member with the fewest parameterised edges, so that dead
convolutions are not counted).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, ClassVar

from nni.nas.hub.pytorch.nasbench201 import PRIMITIVES, NasBench201
from torch import nn

__all__ = [
    "EDGES", "LABELS", "OPS", "Robust201Space", "all_samples", "canonical_key", "canonical_sample",
    "unique_samples",
]

#: Candidate operations of every edge, in NNI's hub order and spelling.
OPS: tuple[str, ...] = tuple(PRIMITIVES)
#: The 6 edges ``(source, target)`` of the cell, in NAS-Bench-201's string order.
EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
#: Sample labels of the 6 edges (NNI's ``NasBench201Cell`` labels under scope ``cell``).
LABELS: tuple[str, ...] = tuple(f"cell/{i}_{j}" for i, j in EDGES)

_PARAM_COST = {"none": 0, "skip_connect": 0, "avg_pool_3x3": 0, "conv_1x1": 1, "conv_3x3": 9}


class Robust201Space(NasBench201):
    """NAS-Bench-201 cells on inputs of any shape (Dong and Yang, ICLR 2020).

    ``width`` is the stem's channel count (NAS-Bench-201: 16), ``cells_per_stage`` the
    number of cells per stage (NAS-Bench-201: 5). The defaults (8, 1) are the benchmark
    ``robust201-digits``'s network: 21 k to 57 k parameters on 1x8x8 digits. Inputs are
    pixels in [0, 1]; there is no normalisation layer (the attacks work in pixel space).

    Example (a cell in its canonical form, as the benchmark table keys it):

    >>> import torch
    >>> from robustnas.search_spaces import random_sample
    >>> from robustnas.search_spaces.robust201 import Robust201Space, canonical_sample
    >>> space = Robust201Space(input_shape=(1, 8, 8), num_classes=10)
    >>> model = space.freeze(canonical_sample(random_sample(space, seed=0)))
    >>> model(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """

    space_name: ClassVar[str] = "robust201"

    def __init__(
        self,
        *,
        input_shape: Sequence[int] = (3, 32, 32),
        num_classes: int = 10,
        width: int = 8,
        cells_per_stage: int = 1,
    ) -> None:
        shape = tuple(int(s) for s in input_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"input_shape must be (channels, height, width) with positive sizes, got {input_shape!r}")
        for name, value in (("num_classes", num_classes), ("width", width), ("cells_per_stage", cells_per_stage)):
            if isinstance(value, bool) or not isinstance(value, int) or value < (2 if name == "num_classes" else 1):
                raise ValueError(f"{name} must be an integer >= {2 if name == 'num_classes' else 1}, got {value!r}")
        super().__init__(stem_out_channels=width, num_modules_per_stack=cells_per_stage, num_labels=num_classes)
        self.stem[0] = nn.Conv2d(shape[0], width, kernel_size=3, padding=1, bias=False)
        self.space_kwargs = {
            "input_shape": list(shape), "num_classes": num_classes, "width": width,
            "cells_per_stage": cells_per_stage,
        }


def _check_sample(sample: Mapping[str, Any]) -> tuple[str, ...]:
    if not isinstance(sample, Mapping):
        raise ValueError(f"a robust201 sample must be a dict {{label: op}}, got {type(sample).__name__}")
    missing = [label for label in LABELS if label not in sample]
    if missing:
        raise ValueError(f"sample misses label(s) {missing} of space 'robust201'; its labels are {list(LABELS)}")
    unknown = sorted(set(sample) - set(LABELS))
    if unknown:
        raise ValueError(f"sample has label(s) {unknown} that space 'robust201' does not have; its labels are {list(LABELS)}")
    ops = tuple(sample[label] for label in LABELS)
    for label, op in zip(LABELS, ops):
        if op not in OPS:
            raise ValueError(f"sample[{label!r}] = {op!r} is not a valid choice; valid choices: {list(OPS)}")
    return ops


def canonical_key(sample: Mapping[str, Any]) -> str:
    """NAS-Bench-201's isomorphism class of a cell (``to_unique_str(consider_zero=True)``).

    Two samples with the same key compute the same function; ``'#'`` is a cell whose
    output is always zero.
    """
    return _unique_str(_check_sample(sample))


@lru_cache(maxsize=None)
def _unique_str(ops: tuple[str, ...]) -> str:
    nodes = {0: "0"}
    edge_op = dict(zip(EDGES, ops))
    for target in (1, 2, 3):
        terms = []
        for source in range(target):
            op = edge_op[(source, target)]
            if op == "none" or nodes[source] == "#":
                terms.append("#")
            elif op == "skip_connect":
                terms.append(nodes[source])
            else:
                terms.append(f"({nodes[source]})@{op}")
        nodes[target] = "+".join(sorted(terms))
    return nodes[3]


def all_samples() -> list[dict[str, str]]:
    """All 15,625 label assignments, in lexicographic order of the operation indices."""
    return [dict(zip(LABELS, ops)) for ops in itertools.product(OPS, repeat=len(LABELS))]


@lru_cache(maxsize=1)
def _classes() -> dict[str, tuple[str, ...]]:
    """Isomorphism class -> its representative's operations."""
    best: dict[str, tuple[tuple[int, int, tuple[int, ...]], tuple[str, ...]]] = {}
    for ops in itertools.product(OPS, repeat=len(LABELS)):
        key = _unique_str(ops)
        rank = (sum(_PARAM_COST[o] for o in ops), sum(o != "none" for o in ops), tuple(OPS.index(o) for o in ops))
        if key not in best or rank < best[key][0]:
            best[key] = (rank, ops)
    return {key: ops for key, (_, ops) in best.items()}


def canonical_sample(sample: Mapping[str, Any]) -> dict[str, str]:
    """The representative of ``sample``'s isomorphism class: the member with the fewest
    convolution weights, then the fewest non-``none`` edges, then the smallest op indices."""
    return dict(zip(LABELS, _classes()[canonical_key(sample)]))


def unique_samples() -> list[dict[str, str]]:
    """The 6,466 representatives, one per isomorphism class, sorted by key."""
    classes = _classes()
    return [dict(zip(LABELS, classes[key])) for key in sorted(classes)]
