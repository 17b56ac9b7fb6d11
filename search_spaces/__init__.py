"""robustnas search spaces: NNI model spaces of ARNAS, DSRNA (DARTS) and TAM-NAS.

Spaces are plain ``nni.nas.nn.pytorch.ModelSpace`` subclasses, so NNI's strategies
(Random, RegularizedEvolution, DARTS, ...) run on them unchanged. Architectures
travel as JSON records (:func:`export_record` / :func:`build_model`).
"""

from ._arnas import ARNASSpace
from ._cell_space import DartsCellSpace
from ._dsrna import DSRNASpace
from ._genotypes import NAMED_ARCHITECTURES, genotype, named_architecture, sample_from_genotype
from ._ops import ARNAS_OPS, DARTS_OPS
from ._records import (
    RECORD_FORMAT, ArchitectureRecord, build_model, export_record, load_record, random_sample, sample_key,
    save_record, validate_sample,
)
from ._registry import ENTRY_POINT_GROUP, SPACES, available_spaces, get_space, register_space, space_name_of


def __getattr__(name: str):  # TinyRobustSpace is imported on first use (search_spaces/tiny.py)
    if name == "TinyRobustSpace":
        from .tiny import TinyRobustSpace

        return TinyRobustSpace
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ARNASSpace", "DSRNASpace", "DartsCellSpace", "TinyRobustSpace",
    "ARNAS_OPS", "DARTS_OPS",
    "SPACES", "ENTRY_POINT_GROUP", "available_spaces", "get_space", "register_space", "space_name_of",
    "RECORD_FORMAT", "ArchitectureRecord", "export_record", "build_model", "save_record", "load_record",
    "validate_sample", "random_sample", "sample_key",
    "NAMED_ARCHITECTURES", "named_architecture", "genotype", "sample_from_genotype",
]
