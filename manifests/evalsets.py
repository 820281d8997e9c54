"""Eval sets in torchvision's ImageFolder layout: `DIR/<class name>/<image file>`, the one reading
of that layout for the pipeline's leak check and the trainer's evaluation alike.

The class folder name, underscores read as spaces, is the label text; the eval set's name is the
folder's base name. Classes are sorted by folder name (ImageFolder's order), images by file name.
Images may sit in subfolders of a class folder (torchvision walks them too). Every image has an
id `<eval set>/<class folder>/<file>` (file: the path inside the class folder, `/`-separated):
the leak check writes it to overlap.parquet and the evaluation's Clean/Overlap split reads it
back, so both sides must walk the same files. Hidden files and folders (a name starting with
".": `.DS_Store`, `.ipynb_checkpoints`, ...) are skipped, and so are files with other
extensions (listed in `ignored`). A malformed eval set is a ConfigError.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

from manifests.config import ConfigError
from manifests.storage import location

log = logging.getLogger(__name__)

# torchvision.datasets.folder.IMG_EXTENSIONS, written out to keep torchvision off the import path.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class EvalItem:
    path: Path
    target: int  # index into EvalSet.classes
    file: str  # path inside the class folder, `/`-separated (ImageFolder walks subfolders)


@dataclass
class EvalSet:
    name: str
    root: Path
    classes: list[str]  # folder names, sorted
    items: list[EvalItem]
    ignored: list[str] = field(default_factory=list)  # files that are not images, relative paths

    @property
    def labels(self) -> list[str]:
        """Label texts: folder names with underscores read as spaces."""
        return [label_text(c) for c in self.classes]

    @property
    def targets(self) -> list[int]:
        return [item.target for item in self.items]

    def item_id(self, index: int) -> str:
        """`<eval set>/<class folder>/<file>` of image `index`: the leak check's eval_id."""
        item = self.items[index]
        return f"{self.name}/{self.classes[item.target]}/{item.file}"

    def __len__(self) -> int:
        return len(self.items)


def label_text(folder: str) -> str:
    return " ".join(folder.replace("_", " ").split())


def _name(path: Path) -> str:
    return path.name


def _visible(path: Path, below: Path | None = None) -> bool:
    """Not hidden, nor inside a hidden folder under `below`."""
    parts = path.relative_to(below).parts if below else (path.name,)
    return not any(part.startswith(".") for part in parts)


def _class_files(class_dir: Path) -> list[Path]:
    """Visible files under a class folder, sorted by their path inside it."""
    return sorted(
        (p for p in class_dir.rglob("*") if p.is_file() and _visible(p, class_dir)),
        key=lambda p: p.relative_to(class_dir).as_posix(),
    )


def _class_dirs(root: Path) -> list[Path]:
    class_dirs = sorted((p for p in root.iterdir() if p.is_dir() and _visible(p)), key=_name)
    if not class_dirs:
        stray = sorted(p.name for p in root.iterdir() if p.is_file() and _visible(p))
        hint = f" (it holds files {', '.join(stray[:3])}...)" if stray else ""
        raise ConfigError(
            f"eval set {root} has no class folders: expected DIR/<class name>/<image file>{hint}"
        )
    return class_dirs


def load_eval_set(directory, min_classes: int = 2) -> EvalSet:
    """Read an ImageFolder eval set; a ConfigError says what is wrong with a malformed one (too
    few class folders with images among them: fewer than `min_classes`)."""
    root = location(directory)
    if not root.is_dir():
        raise ConfigError(f"eval set {root} is not a folder")
    name = root.resolve().name
    classes, items, ignored, empty = [], [], [], []
    for class_dir in _class_dirs(root):
        files = _class_files(class_dir)
        images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
        ignored += [p.relative_to(root).as_posix() for p in files if p not in images]
        if not images:
            empty.append(class_dir.name)
            continue
        if not label_text(class_dir.name):
            raise ConfigError(f"eval set {root}: class folder {class_dir.name!r} has no label text")
        target = len(classes)
        classes.append(class_dir.name)
        items += [EvalItem(p, target, p.relative_to(class_dir).as_posix()) for p in images]
    if empty:
        log.warning("eval set %s: class folders without images skipped: %s", name, empty)
    if len(classes) < min_classes:
        raise ConfigError(
            f"eval set {root} has {len(classes)} class folder(s) with images "
            f"({len(items)} images); at least {min_classes} are needed "
            f"(image extensions: {' '.join(IMAGE_EXTENSIONS)})"
        )
    stray = [p.name for p in root.iterdir() if p.is_file() and _visible(p)]
    if stray:
        log.warning("eval set %s: files outside class folders ignored: %s", name, stray[:5])
    return EvalSet(name=name, root=root, classes=classes, items=items, ignored=ignored)


def load_eval_sets(directories, min_classes: int = 2) -> list[EvalSet]:
    """Several eval sets; their names (folder base names) must differ, since image ids and
    results are keyed by them."""
    sets = [load_eval_set(d, min_classes) for d in directories]
    names = [s.name for s in sets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(
            f"eval sets must have different folder names (results are keyed by them): "
            f"{', '.join(duplicates)} given more than once"
        )
    return sets


def restrict_to_classes(probe_train: EvalSet, eval_set: EvalSet) -> EvalSet:
    """`probe_train` relabelled with `eval_set`'s class indices (for `--probe-train DIR`); its
    classes must be among the eval set's."""
    index = {c: i for i, c in enumerate(eval_set.classes)}
    unknown = [c for c in probe_train.classes if c not in index]
    if unknown:
        raise ConfigError(
            f"--probe-train {probe_train.root} has classes the eval set {eval_set.name} lacks: "
            f"{', '.join(unknown[:5])}"
        )
    items = [
        EvalItem(it.path, index[probe_train.classes[it.target]], it.file)
        for it in probe_train.items
    ]
    return EvalSet(probe_train.name, probe_train.root, list(eval_set.classes), items)
