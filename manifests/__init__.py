"""The data contract between the pipeline and the trainer.

`schema` holds the pyarrow schemas of every table, `layout` the dataset folder layout and atomic
writers, `db` the DuckDB access layer (`manifests.open(dataset_dir)`), and `subsets/` the named
subsets as `.sql` files. This package imports neither `pipeline` nor `trainer`.
"""

from manifests.db import list_subsets, open, subset_sql
from manifests.layout import DatasetLayout

__all__ = ["DatasetLayout", "list_subsets", "open", "subset_sql"]
