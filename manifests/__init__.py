"""The data contract between the pipeline and the trainer.

- `schema`: the pyarrow schemas of every table and the one list of drop reasons;
- `layout`: the dataset folder layout and the one commit point (`atomic_path`);
- `db`: the DuckDB access layer (`manifests.open(dataset_dir)`); `subsets/`: named subsets;
- `evalsets`: the eval-set (ImageFolder) contract the leak check and evaluation both read;
- `config` and `cli`: the typed-config helpers, the one ConfigError, and the conventions both
  CLIs share (`completion`: their bash completion).

This package imports neither `pipeline` nor `trainer`.
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
