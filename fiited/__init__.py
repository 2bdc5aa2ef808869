"""fiited: one embedding interface, one kernel backend, one memory ledger.

Methods register on import: ``fiited.method`` (FIITED) and ``baselines``. Both
are imported lazily by ``fiited.registry`` (fiited must not import baselines at module level).
"""
from fiited.interface import EmbeddingMethod, FeatureSpec, MethodConfig, TableSpec
from fiited.grouped import GroupedEmbeddings
from fiited.jagged import Jagged
from fiited.memory import MemoryReport
from fiited.optim import SparseOptimConfig
from fiited.registry import build_method, method_names, register_method

__all__ = [
    "EmbeddingMethod",
    "FeatureSpec",
    "GroupedEmbeddings",
    "Jagged",
    "MemoryReport",
    "MethodConfig",
    "SparseOptimConfig",
    "TableSpec",
    "build_method",
    "method_names",
    "register_method",
]
