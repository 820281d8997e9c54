"""The data contract between the pipeline and the trainer.

`evalsets` the eval-set (ImageFolder) contract both halves read, `config` holds the typed-config helpers and the one ConfigError, `cli` the conventions both
CLIs share, `schema` holds the pyarrow schemas of every table, `layout` the dataset folder layout and atomic
writers, `db` the DuckDB access layer (`manifests.open(dataset_dir)`), and `subsets/` the named
subsets as `.sql` files. This package imports neither `pipeline` nor `trainer`.
"""

import importlib

# Exported lazily (PEP 562): `manifests.config` is imported by both CLIs to build their flags, and
# should not pay for pyarrow and DuckDB.
_MODULE_OF = {"open": "db", "list_subsets": "db", "subset_sql": "db", "DatasetLayout": "layout"}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"manifests.{_MODULE_OF[name]}"), name)
