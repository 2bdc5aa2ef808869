"""Baselines: thin policies over fiited's interface, kernels and ledger.

Every module here registers its method on import; importing the package imports them all.
"""
import importlib
import pkgutil

for _m in pkgutil.iter_modules(__path__):
    if not _m.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_m.name}")
