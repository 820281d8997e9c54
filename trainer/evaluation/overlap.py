"""Clean vs overlap: zero-shot accuracy on eval images with and without a copy in the training data
(CLIP §5, "Data Overlap Analysis"), from a leak-checked build's DIR/overlap.parquet.

overlap.parquet has one row per eval image (several rows per image are merged: a copy in any row
counts). Columns read, tolerantly (the first present name of each group is used):
- the image: `eval_id` | `id` | `image_id` | `item_id` | `eval_image`, a string
  "<eval set>/<class>/<file>" (as pipeline.dedup.evalsets writes it); or three columns, set
  `eval_set` | `eval_set_name` | `set` | `dataset`, class `class` | `class_name` | `label` |
  `eval_class`, file `file` | `filename` | `file_name` | `eval_file` | `path` | `image`.
- the flag: `has_copy` | `overlap` | `is_overlap` | `has_leak` | `leaked` (boolean; null: unchecked).
Classes match by label text (underscores and spaces alike); files by their path inside the class
folder (the id's <file>, as manifests.evalsets.EvalSet.item_id names it, so two images of one
class in different subfolders stay apart), or by base name when the table only has full paths (a
`path` or `image` column). Eval images the table does not list are "unchecked": counted in All,
in neither Clean nor Overlap.

Reported per eval set: counts, the detected overlap fraction, top-1 on All, Clean and Overlap,
All - Clean (the paper's headline difference) and Overlap - Clean, and the one-sided binomial
p-value of the Overlap accuracy given the Clean accuracy (the paper's test).
"""

import logging
from dataclasses import dataclass
from pathlib import Path

from manifests import storage
from manifests.evalsets import label_text
from trainer.evaluation.errors import EvalError

log = logging.getLogger(__name__)

OVERLAP_FILE = "overlap.parquet"
ID_COLUMNS = ("eval_id", "id", "image_id", "item_id", "eval_image")
SET_COLUMNS = ("eval_set", "eval_set_name", "set", "dataset")
CLASS_COLUMNS = ("class", "class_name", "label", "eval_class")
FILE_COLUMNS = ("file", "filename", "file_name", "eval_file", "path", "image")
FLAG_COLUMNS = ("has_copy", "overlap", "is_overlap", "has_leak", "leaked")
FULL_PATH_COLUMNS = ("path", "image")  # paths outside the eval set too: matched by base name


def _parts(path) -> list[str]:
    return [p for p in str(path).replace("\\", "/").split("/") if p]


def image_key(eval_set: str, cls: str, file: str) -> tuple[str, str, str]:
    """(eval set, label text, file: the `/`-separated path inside the class folder)."""
    return (eval_set, label_text(cls), "/".join(_parts(file)))


def key_of_id(item_id: str) -> tuple[str, str, str] | None:
    """ "<eval set>/<class>/<file>" -> key; the file may have subfolders."""
    parts = _parts(item_id)
    return image_key(parts[0], parts[1], "/".join(parts[2:])) if len(parts) >= 3 else None


def _base_key(key: tuple[str, str, str]) -> tuple[str, str, str]:
    return (key[0], key[1], key[2].rsplit("/", 1)[-1])


@dataclass
class OverlapTable:
    path: Path
    flags: dict  # image key -> bool
    eval_sets: set  # eval set names the table covers
    by_base_name: bool = False  # keys name files by base name (a table of full paths)

    def flag(self, item_id: str) -> bool | None:
        """The copy flag of an eval image by its id; None when the table does not list it."""
        key = key_of_id(item_id)
        if key is not None and self.by_base_name:
            key = _base_key(key)
        return self.flags.get(key)


def _first(names, choices):
    return next((c for c in choices if c in names), None)


def _keys(table, names: list[str], path: Path) -> tuple[list, bool]:
    """(image key per row, whether the keys name files by base name)."""
    id_col = _first(names, ID_COLUMNS)
    if id_col:
        ids = table[id_col].to_pylist()
        return [key_of_id(v) if v is not None else None for v in ids], False
    cols = [_first(names, group) for group in (SET_COLUMNS, CLASS_COLUMNS, FILE_COLUMNS)]
    if None in cols:
        raise EvalError(
            f"{path} has columns {', '.join(names)}: no image id column "
            f"({' | '.join(ID_COLUMNS)}) nor eval set, class and file columns"
        )
    values = zip(*(table[c].to_pylist() for c in cols), strict=True)
    keys = [image_key(*v) if None not in v else None for v in values]
    if cols[2] not in FULL_PATH_COLUMNS:
        return keys, False
    return [_base_key(k) if k is not None else None for k in keys], True


def read_overlap(data_dir) -> OverlapTable | None:
    """DIR/overlap.parquet as image key -> has a copy; None when the file does not exist."""

    path = storage.location(data_dir) / OVERLAP_FILE
    if not path.is_file():
        return None
    try:
        table = storage.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise EvalError(f"cannot read {path}: {exc}") from None
    names = table.column_names
    flag_col = _first(names, FLAG_COLUMNS)
    if flag_col is None:
        raise EvalError(f"{path} has no copy flag column ({' | '.join(FLAG_COLUMNS)}): {names}")
    keys, by_base_name = _keys(table, names, path)
    flags: dict = {}
    for key, flag in zip(keys, table[flag_col].to_pylist(), strict=True):
        if key is None or flag is None:
            continue
        flags[key] = flags.get(key, False) or bool(flag)
    return OverlapTable(path, flags, {k[0] for k in flags}, by_base_name)


def split_accuracy(hits, flags) -> dict:
    """hits: per image correct (bool); flags: per image True (overlap), False (clean) or None
    (unchecked). Accuracies are None where a group is empty."""
    groups = {"all": list(hits)}
    groups["clean"] = [h for h, f in zip(hits, flags, strict=True) if f is False]
    groups["overlap"] = [h for h, f in zip(hits, flags, strict=True) if f is True]
    acc = {g: (sum(map(bool, v)) / len(v) if v else None) for g, v in groups.items()}
    checked = len(groups["clean"]) + len(groups["overlap"])
    out = {
        "n_all": len(groups["all"]),
        "n_clean": len(groups["clean"]),
        "n_overlap": len(groups["overlap"]),
        "n_unchecked": len(groups["all"]) - checked,
        "overlap_fraction": len(groups["overlap"]) / checked if checked else None,
        "top1_all": acc["all"],
        "top1_clean": acc["clean"],
        "top1_overlap": acc["overlap"],
        "all_minus_clean": _diff(acc["all"], acc["clean"]),
        "overlap_minus_clean": _diff(acc["overlap"], acc["clean"]),
    }
    out["p_value"] = _binomial_p(sum(map(bool, groups["overlap"])), out["n_overlap"], acc["clean"])
    return out


def _diff(a, b):
    return None if a is None or b is None else a - b


def _binomial_p(successes: int, n: int, p_clean) -> float | None:
    """P(X >= successes) for X ~ Binomial(n, p_clean): is the overlap accuracy higher than
    chance given the clean accuracy?"""
    if not n or p_clean is None:
        return None
    from scipy.stats import binomtest

    return float(binomtest(successes, n, p_clean, alternative="greater").pvalue)


def overlap_section(table: OverlapTable | None, eval_set_name: str, item_ids, hits, data_dir):
    """The `overlap` section of one eval set; `item_ids` and `hits` are per readable image."""
    if data_dir is None:
        return {"available": False, "reason": "no --data DIR given"}
    if table is None:
        return {
            "available": False,
            "reason": f"{storage.location(data_dir) / OVERLAP_FILE} does not exist (build the dataset with "
            "`pipeline build ... --eval-set DIR` to run the leak check)",
        }
    if eval_set_name not in table.eval_sets:
        return {
            "available": False,
            "reason": f"{table.path} has no rows for eval set {eval_set_name!r} "
            f"(it covers: {', '.join(sorted(table.eval_sets)) or 'none'})",
        }
    flags = [table.flag(i) for i in item_ids]
    return {"available": True, "source": str(table.path), **split_accuracy(list(hits), flags)}
