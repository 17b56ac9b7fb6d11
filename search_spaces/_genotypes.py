"""DARTS-style genotypes and the shipped architectures of the cell spaces.

A genotype lists, per cell type, the ``(operation, input)`` pair of every edge,
two per intermediate node, as in DARTS' ``genotypes.py``: inputs 0 and 1 are the
two cell inputs, input ``k >= 2`` is intermediate node ``k - 2``. NNI's ``Cell``
numbers its nodes the same way, so genotype node ``n`` is NNI node ``n + 2``
(labels ``<cell>/op_<n+2>_<k>`` and ``<cell>/input_<n+2>_<k>``).
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Mapping, Sequence
from typing import Any

from ._cell_space import NUM_INPUTS_PER_NODE, NUM_NODES, NUM_PREDECESSORS

__all__ = ["NAMED_ARCHITECTURES", "genotype", "named_architecture", "sample_from_genotype"]

Edge = tuple[str, int]

_SEP3, _SEP5, _DIL3, _DIL5 = "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"
_SKIP, _AVG, _MAX = "skip_connect", "avg_pool_3x3", "max_pool_3x3"

#: Shipped genotypes: space name -> architecture name -> cell label -> 8 edges (2 per node).
NAMED_ARCHITECTURES: dict[str, dict[str, dict[str, list[Edge]]]] = {
    "arnas": {
        # Released ARNAS genotype (Ou et al., CVPR 2024, authors' code).
        "arnas": {
            "accurate": [(_SKIP, 0), (_SKIP, 1), (_SEP5, 0), (_SEP3, 1),
                         (_SEP5, 3), (_SEP3, 1), (_SEP5, 4), (_SKIP, 0)],
            "reduce": [(_AVG, 1), (_AVG, 0), (_DIL5, 2), (_AVG, 0),
                       (_DIL5, 3), (_DIL5, 2), (_DIL5, 4), (_DIL5, 3)],
            "robust": [(_DIL5, 0), (_DIL5, 1), (_DIL5, 1), (_DIL5, 2),
                       (_DIL3, 3), (_DIL5, 2), (_DIL3, 4), (_DIL3, 3)],
        },
    },
    "dsrna": {
        # DARTS-V2 (Liu et al., ICLR 2019, genotypes.py); identical to NNI's DARTS 'darts-v2'.
        "darts_v2": {
            "normal": [(_SEP3, 0), (_SEP3, 1), (_SEP3, 0), (_SEP3, 1),
                       (_SEP3, 1), (_SKIP, 0), (_SKIP, 0), (_DIL3, 2)],
            "reduce": [(_MAX, 0), (_MAX, 1), (_SKIP, 2), (_MAX, 1),
                       (_MAX, 0), (_SKIP, 2), (_SKIP, 2), (_MAX, 1)],
        },
    },
}


def _cell_labels(space_name: str) -> tuple[str, ...]:
    from ._registry import get_space_class  # late: the registry imports this module

    cls = get_space_class(space_name)
    labels = getattr(cls, "cell_labels", ())
    if not labels:
        raise ValueError(f"space {space_name!r} is not a cell space; genotypes exist only for cell spaces")
    return tuple(labels)


def sample_from_genotype(cells: Mapping[str, Sequence[Edge]]) -> dict[str, Any]:
    """NNI sample (``{label: choice}``) of a cell space from per-cell ``(op, input)`` edges.

    ``cells`` maps a cell label to its 8 edges in node order (2 per node), or is a
    genotype namedtuple's ``_asdict()`` (``*_concat`` fields are ignored).
    """
    sample: dict[str, Any] = {}
    for label, edges in cells.items():
        if label.endswith("_concat"):
            continue
        edges = list(edges)
        if len(edges) != NUM_NODES * NUM_INPUTS_PER_NODE:
            raise ValueError(
                f"cell {label!r} has {len(edges)} edges; expected {NUM_NODES * NUM_INPUTS_PER_NODE} "
                f"({NUM_INPUTS_PER_NODE} per node for {NUM_NODES} nodes)"
            )
        for position, (op, source) in enumerate(edges):
            node = NUM_PREDECESSORS + position // NUM_INPUTS_PER_NODE
            k = position % NUM_INPUTS_PER_NODE
            if not 0 <= int(source) < node:
                raise ValueError(
                    f"cell {label!r}, node {node - NUM_PREDECESSORS}: input {source} is not one of {list(range(node))}"
                )
            sample[f"{label}/op_{node}_{k}"] = op
            sample[f"{label}/input_{node}_{k}"] = [int(source)]
    return sample


def named_architecture(space_name: str, arch_name: str) -> dict[str, Any]:
    """A shipped architecture as an NNI sample of the named space.

    ``("arnas", "arnas")``: the released ARNAS genotype (Ou et al., CVPR 2024);
    ``("dsrna", "darts_v2")``: DARTS-V2 (Liu et al., ICLR 2019), for reference.
    """
    if space_name not in NAMED_ARCHITECTURES:
        raise ValueError(
            f"no named architectures for space {space_name!r}; spaces with some: {sorted(NAMED_ARCHITECTURES)}"
        )
    archs = NAMED_ARCHITECTURES[space_name]
    if arch_name not in archs:
        raise ValueError(
            f"unknown architecture {arch_name!r} for space {space_name!r}; valid names: {sorted(archs)}"
        )
    return sample_from_genotype(archs[arch_name])


def genotype(record_or_sample: Mapping[str, Any], space_name: str | None = None) -> Any:
    """DARTS-style genotype (a namedtuple) of a cell-space sample or record.

    Fields are ``<label>`` (list of ``(op, input)``) and ``<label>_concat``
    (``[2, 3, 4, 5]``) for each cell label of the space, e.g. DSRNA gives
    ``Genotype(normal=[...], normal_concat=[2, 3, 4, 5], reduce=[...], reduce_concat=[...])``
    as DARTS' ``genotypes.py``. ``space_name`` may be omitted for a record.
    """
    if "sample" in record_or_sample and "space" in record_or_sample:
        sample = record_or_sample["sample"]
        space_name = space_name or record_or_sample["space"]
    else:
        sample = record_or_sample
    if space_name is None:
        raise ValueError("space_name is required when a bare sample (not a record) is given")
    labels = _cell_labels(space_name)
    fields: dict[str, Any] = {}
    for label in labels:
        edges = []
        for node in range(NUM_PREDECESSORS, NUM_PREDECESSORS + NUM_NODES):
            for k in range(NUM_INPUTS_PER_NODE):
                op_key, in_key = f"{label}/op_{node}_{k}", f"{label}/input_{node}_{k}"
                if op_key not in sample or in_key not in sample:
                    raise ValueError(f"sample lacks {op_key!r} or {in_key!r} of space {space_name!r}")
                source = sample[in_key]
                source = source[0] if isinstance(source, (list, tuple)) else source
                edges.append((sample[op_key], int(source)))
        fields[label] = edges
        fields[f"{label}_concat"] = list(range(NUM_PREDECESSORS, NUM_PREDECESSORS + NUM_NODES))
    return namedtuple("Genotype", list(fields))(**fields)
