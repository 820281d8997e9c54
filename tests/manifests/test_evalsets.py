"""The one ImageFolder eval-set contract (manifests.evalsets): the walk, hidden files, image ids,
errors, and that the leak check and the evaluation's Clean/Overlap split name the same images."""

import pytest
from PIL import Image

from manifests.config import ConfigError
from manifests.evalsets import IMAGE_EXTENSIONS, load_eval_set, load_eval_sets


def image(path, colour=(0, 0, 0), size: int = 8):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)
    return path


def folder(root, files: list[str]):
    """root/<each relative path>: an image where the name has an image extension, else text."""
    for rel in files:
        path = root / rel
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            image(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("not an image")
    return root


def ids(eval_set) -> list[str]:
    return [eval_set.item_id(i) for i in range(len(eval_set))]


def test_layout_labels_and_ids(tmp_path):
    root = folder(tmp_path / "pets", ["big_cat/000.png", "big_cat/001.png", "dog/000.png"])
    folder(root, ["dog/notes.txt"])
    (root / "empty_class").mkdir()
    s = load_eval_set(root)
    assert (s.name, s.classes, s.labels) == ("pets", ["big_cat", "dog"], ["big cat", "dog"])
    assert s.targets == [0, 0, 1] and s.ignored == ["dog/notes.txt"] and len(s) == 3
    assert s.item_id(2) == "pets/dog/000.png"
    # images in subfolders of a class folder belong to it (as in torchvision's ImageFolder)
    folder(root, ["dog/more/x.png"])
    s = load_eval_set(root)
    assert s.targets == [0, 0, 1, 1] and s.item_id(3) == "pets/dog/more/x.png"
    assert s.items[3].file == "more/x.png" and s.items[3].path == root / "dog" / "more" / "x.png"


HIDDEN = [
    ".DS_Store",  # Finder's, beside the class folders
    "cat/.DS_Store",
    "cat/._a.png",  # macOS resource fork: an "image" by its extension, but hidden
    "cat/.ipynb_checkpoints/a-checkpoint.png",  # Jupyter's, inside a class folder
    ".ipynb_checkpoints/x.png",  # ... and beside the class folders: not a class
    ".hidden_class/b.png",  # a hidden class folder
]


def test_hidden_files_and_folders_are_skipped(tmp_path):
    root = folder(tmp_path / "pets", ["cat/a.png", "dog/b.jpg", "dog/sub/c.webp", *HIDDEN])
    s = load_eval_set(root)
    assert s.classes == ["cat", "dog"]
    assert ids(s) == ["pets/cat/a.png", "pets/dog/b.jpg", "pets/dog/sub/c.webp"]
    assert s.ignored == []  # hidden files are not even reported as ignored
    # a class folder that holds only hidden images has no images
    folder(root, ["bird/.thumb.png"])
    assert load_eval_set(root).classes == ["cat", "dog"]
    # an eval set whose only folders are hidden has no class folders
    folder(tmp_path / "bare", [".ipynb_checkpoints/x.png", ".DS_Store"])
    with pytest.raises(ConfigError, match="no class folders"):
        load_eval_set(tmp_path / "bare")


def test_errors_are_config_errors(tmp_path):
    from trainer.evaluation.errors import EvalError

    assert issubclass(EvalError, ConfigError)  # trainer eval reports both the same way
    with pytest.raises(ConfigError, match="is not a folder"):
        load_eval_set(tmp_path / "missing")
    folder(tmp_path / "flat", ["a.png"])
    with pytest.raises(ConfigError, match="no class folders.*a.png"):
        load_eval_set(tmp_path / "flat")
    folder(tmp_path / "one", ["cat/0.png", "dog/x.txt"])
    with pytest.raises(ConfigError, match="1 class folder"):
        load_eval_set(tmp_path / "one")
    assert load_eval_set(tmp_path / "one", min_classes=1).classes == ["cat"]
    a = folder(tmp_path / "a" / "pets", ["cat/0.png", "dog/0.png"])
    b = folder(tmp_path / "b" / "pets", ["cat/0.png", "dog/0.png"])
    with pytest.raises(ConfigError, match="pets given more than once"):
        load_eval_sets([a, b])


@pytest.mark.timeout(120)
def test_leak_check_and_overlap_split_name_the_same_images(tmp_path):
    """The leak check hashes an eval set and writes overlap.parquet keyed by eval_id; the
    evaluation reads the set with load_eval_set and splits its images into Clean and Overlap by
    item_id. Both must see the same images (hidden ones on neither side) under the same ids,
    including two images of one class with the same file name in different subfolders."""
    from pipeline.dedup.evalsets import hash_eval_sets
    from pipeline.dedup.hashes import image_hashes
    from pipeline.dedup.leaks import find_leaks, write_overlap
    from tests.pipeline.dedup.images import scene
    from trainer.evaluation.overlap import overlap_section, read_overlap

    root = tmp_path / "evals" / "pets"
    pictures = {"cat/a/1.png": scene(1), "cat/b/1.png": scene(2), "dog/3.jpg": scene(3)}
    for rel, picture in pictures.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        picture.save(root / rel)
    folder(root, HIDDEN)
    eval_set = load_eval_set(root)
    eval_table = hash_eval_sets([root])
    expected = ["pets/cat/a/1.png", "pets/cat/b/1.png", "pets/dog/3.jpg"]
    assert ids(eval_set) == eval_table.column("eval_id").to_pylist() == expected

    # the pool holds a copy of cat/b/1.png only (and an unrelated picture)
    pool = {"copy": scene(2).resize((100, 100)), "other": scene(40)}
    hashes = [image_hashes(p) for p in pool.values()]
    p256, p256_trim = ([h[k] for h in hashes] for k in ("phash256", "phash256_trim"))
    leaks = find_leaks(eval_table, list(pool), p256, p256_trim)
    assert [(leak.uid, leak.eval_id) for leak in leaks] == [("copy", "pets/cat/b/1.png")]
    data = tmp_path / "data"
    write_overlap(data / "overlap.parquet", eval_table, leaks)

    table = read_overlap(data)
    assert [table.flag(i) for i in ids(eval_set)] == [False, True, False]
    hits = [True, False, True]
    out = overlap_section(table, eval_set.name, ids(eval_set), hits, data)
    assert (out["n_overlap"], out["n_clean"], out["n_unchecked"]) == (1, 2, 0)
    assert out["top1_overlap"] == 0.0 and out["top1_clean"] == 1.0


def test_a_single_class_eval_set_is_leak_checked(tmp_path):
    from pipeline.dedup.evalsets import hash_eval_sets

    root = folder(tmp_path / "logos", ["all/1.png", "all/2.png", ".DS_Store"])
    table = hash_eval_sets([root])
    assert table.column("eval_id").to_pylist() == ["logos/all/1.png", "logos/all/2.png"]
    assert table.column("error").to_pylist() == [None, None]
