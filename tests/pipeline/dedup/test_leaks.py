import pyarrow.parquet as pq
import pytest
from PIL import Image

from manifests.config import ConfigError
from pipeline.dedup.decide import DedupConfig, decide
from pipeline.dedup.evalsets import hash_eval_sets, hash_eval_sets_cached
from pipeline.dedup.hashes import image_hashes
from pipeline.dedup.leaks import LeakConfig, find_leaks, overlap_summary, write_overlap
from tests.pipeline.dedup.images import copies, drawing, scene


def make_eval_set(root, name: str, images: dict) -> str:
    """ImageFolder `root/name/<class>/<file>`; images: {"class/file": PIL image}."""
    for rel, image in images.items():
        path = root / name / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
    return str(root / name)


@pytest.fixture(scope="module")
def eval_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("evals")
    cats = {"cat/a.png": scene(1), "cat/b.jpg": scene(2)}
    dogs = {"dog/c.png": scene(3), "dog/d.png": scene(4), "dog/sticker.png": drawing(5)}
    pets = make_eval_set(root, "pets", cats | dogs)
    flowers = make_eval_set(root, "flowers", {"rose/e.png": scene(6), "tulip/f.png": scene(7)})
    (root / "pets" / "dog" / "broken.png").write_bytes(b"not a png")
    (root / "pets" / "notes.txt").write_text("not an image, not a class folder")
    return hash_eval_sets([pets, flowers])


HASH_COLUMNS = ("phash", "phash256", "phash256_trim")


def pool_row(uid: str, image) -> dict:
    return {"uid": uid, "width": image.width, "height": image.height, **image_hashes(image)}


def run_leaks(eval_table, rows):
    return find_leaks(
        eval_table,
        [r["uid"] for r in rows],
        [r["phash256"] for r in rows],
        [r["phash256_trim"] for r in rows],
    )


def test_eval_table(eval_sets):
    ids = eval_sets.column("eval_id").to_pylist()
    pets = ["cat/a.png", "cat/b.jpg", "dog/broken.png", "dog/c.png", "dog/d.png", "dog/sticker.png"]
    flowers = ["rose/e.png", "tulip/f.png"]
    assert ids == [f"pets/{f}" for f in pets] + [f"flowers/{f}" for f in flowers]
    errors = dict(zip(ids, eval_sets.column("error").to_pylist(), strict=True))
    assert errors["pets/dog/broken.png"].startswith("cannot decode image")
    assert sum(e is not None for e in errors.values()) == 1
    trims = dict(zip(ids, eval_sets.column("phash256_trim_variants").to_pylist(), strict=True))
    assert len(trims["pets/cat/a.png"]) == 20
    assert len(trims["pets/dog/sticker.png"]) == 40  # transparency: on white and on black


@pytest.mark.timeout(60)
@pytest.mark.parametrize("source", ["pets/cat/a.png", "pets/dog/d.png", "flowers/tulip/f.png"])
def test_copies_are_found_with_the_right_leak_of(eval_sets, source):
    image = {"pets/cat/a.png": scene(1), "pets/dog/d.png": scene(4)}.get(source, scene(7))
    rows = [pool_row(f"copy-{name}", c) for name, c in copies(image).items()]
    leaks = run_leaks(eval_sets, rows)
    assert {leak.uid: leak.eval_id for leak in leaks} == {r["uid"]: source for r in rows}


def test_transparent_eval_image_copies(eval_sets):
    sticker = drawing(5)
    on_white = Image.alpha_composite(Image.new("RGBA", sticker.size, "white"), sticker)
    flattened = {
        "as_is": sticker,  # hashed with its alpha: composited onto white
        "on_white_jpeg": copies(on_white)["jpeg_30"],
        "alpha_dropped": sticker.convert("RGB"),  # transparent pixels come out black
        "on_white_padded": copies(on_white)["pad"],
    }
    rows = [pool_row(name, image) for name, image in flattened.items()]
    leaks = run_leaks(eval_sets, rows)
    assert {leak.uid: leak.eval_id for leak in leaks} == {
        name: "pets/dog/sticker.png" for name in flattened
    }


def test_different_images_are_not_leaks(eval_sets):
    rows = [pool_row(f"other-{s}", scene(s)) for s in range(20, 60)]
    rows += [pool_row(f"sticker-{s}", drawing(s)) for s in range(20, 40)]
    assert run_leaks(eval_sets, rows) == []


def test_overlap_marks_exactly_the_copied_eval_images(eval_sets, tmp_path):
    rows = [pool_row(f"a-{n}", c) for n, c in copies(scene(1)).items()]
    rows += [pool_row("e-gray", copies(scene(6))["gray"]), pool_row("other", scene(99))]
    leaks = run_leaks(eval_sets, rows)
    path = write_overlap(tmp_path / "overlap.parquet", eval_sets, leaks)
    overlap = pq.read_table(path)
    by_id = {r["eval_id"]: r for r in overlap.to_pylist()}
    assert {i for i, r in by_id.items() if r["has_copy"]} == {
        "pets/cat/a.png",
        "flowers/rose/e.png",
    }
    assert by_id["pets/cat/a.png"]["copies"] == len(copies(scene(1)))
    assert by_id["flowers/rose/e.png"]["copies"] == 1
    assert by_id["flowers/rose/e.png"]["example_uid"] == "e-gray"
    assert by_id["pets/cat/b.jpg"]["copies"] == 0 and by_id["pets/cat/b.jpg"]["example_uid"] is None
    assert (by_id["pets/cat/b.jpg"]["eval_set"], by_id["pets/cat/b.jpg"]["class"]) == (
        "pets",
        "cat",
    )
    broken = by_id["pets/dog/broken.png"]
    assert broken["error"] is not None and broken["has_copy"] is None  # not checked
    summary = {s["eval_set"]: s for s in overlap_summary(overlap)}
    assert summary["pets"]["with_copy"] == 1 and summary["pets"]["images"] == 5
    assert summary["flowers"]["overlap_percent"] == 50.0


@pytest.mark.timeout(60)
def test_ivf_index_finds_the_same_copies(eval_sets):
    rows = [pool_row(f"copy-{n}", c) for n, c in copies(scene(3)).items()]
    rows += [pool_row(f"other-{s}", scene(s)) for s in range(20, 30)]
    args = (
        [r["uid"] for r in rows],
        [r["phash256"] for r in rows],
        [r["phash256_trim"] for r in rows],
    )
    flat = find_leaks(eval_sets, *args, LeakConfig(index="flat"))
    ivf = find_leaks(eval_sets, *args, LeakConfig(index="ivf", nprobe=64))
    assert [(x.uid, x.eval_id) for x in flat] == [(x.uid, x.eval_id) for x in ivf]
    assert len(flat) == len(copies(scene(3)))


def test_decide_leaks_first_then_near_duplicates(eval_sets):
    big = scene(40, size=256)
    rows = [
        pool_row("leak", scene(2)),
        pool_row("leak-small", scene(2).resize((64, 64))),
        pool_row("big", big),
        pool_row("small", big.resize((128, 128))),
        pool_row("jpeg", copies(big)["jpeg_30"]),
        pool_row("alone", scene(41)),
        {"uid": "no-hash", "width": 10, "height": 10, **dict.fromkeys(HASH_COLUMNS)},
    ]
    table = {k: [r[k] for r in rows] for k in rows[0]}
    updates, leaks = decide(table, eval_sets, DedupConfig(near_dup_radius=6))
    assert {u: x["status"] for u, x in updates.items()} == {
        "leak": "eval_leak",
        "leak-small": "eval_leak",
        "small": "duplicate",
        "jpeg": "duplicate",
    }
    assert updates["leak"]["leak_of"] == "pets/cat/b.jpg"
    assert updates["small"]["dup_of"] == "big" and updates["jpeg"]["dup_of"] == "big"
    assert len(leaks) == 2
    # Without eval sets and near-dups, nothing changes.
    assert decide(table, None, DedupConfig())[0] == {}


def test_decide_with_exact_duplicates(eval_sets):
    big = scene(40, size=256)
    rows = [
        pool_row("leak", scene(2)),
        pool_row("leak-bytes", scene(2)),  # same bytes as `leak`: still counted as a copy
        pool_row("big", big),
        pool_row("small", big.resize((128, 128))),
        pool_row("small-bytes", big.resize((128, 128))),  # same bytes as `small`
    ]
    table = {k: [r[k] for r in rows] for k in rows[0]}
    exact = {"leak-bytes": "leak", "small-bytes": "small"}
    updates, leaks = decide(table, eval_sets, DedupConfig(near_dup_radius=4), exact)
    assert {u: (x["status"], x.get("dup_of"), x.get("leak_of")) for u, x in updates.items()} == {
        "leak": ("eval_leak", None, "pets/cat/b.jpg"),
        "leak-bytes": ("eval_leak", None, "pets/cat/b.jpg"),
        "small": ("duplicate", "big", None),
        "small-bytes": ("duplicate", "big", None),  # follows `small` to the representative
    }
    assert sorted(leak.uid for leak in leaks) == ["leak", "leak-bytes"]


def test_bad_inputs(tmp_path):
    with pytest.raises(ConfigError, match="is not a folder"):
        hash_eval_sets([tmp_path / "missing"])
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    (tmp_path / "empty" / "cls" / "notes.txt").write_text("not an image")
    with pytest.raises(ConfigError, match=r"0 class folder\(s\) with images \(0 images\)"):
        hash_eval_sets([tmp_path / "empty"])
    with pytest.raises(ConfigError, match="no class folders"):
        hash_eval_sets_cached([tmp_path / "empty" / "cls"], tmp_path / "cache.parquet")
    a = make_eval_set(tmp_path / "x", "same", {"c/1.png": scene(1)})
    b = make_eval_set(tmp_path / "y", "same", {"c/2.png": scene(2)})
    with pytest.raises(ConfigError, match="same given more than once"):
        hash_eval_sets([a, b])
    with pytest.raises(ValueError, match="leak radius"):
        LeakConfig(radius=300)
    with pytest.raises(ValueError, match="leak index"):
        LeakConfig(index="hnsw")
    with pytest.raises(ValueError, match="near-dup radius"):
        DedupConfig(near_dup_radius=40)


def test_eval_hashes_are_cached_until_an_image_changes(tmp_path):
    root = make_eval_set(tmp_path, "tiny", {"c/1.png": scene(1), "c/2.png": scene(2)})
    cache = tmp_path / "work" / "eval_hashes.parquet"
    calls = []

    def counting_map(fn, items):
        calls.append(len(items))
        return map(fn, items)

    first = hash_eval_sets_cached([root], cache, counting_map)
    again = hash_eval_sets_cached([root], cache, counting_map)
    assert calls == [2] and again.equals(first)
    (tmp_path / "tiny" / "c" / ".DS_Store").write_bytes(b"\0")  # hidden: not an eval image
    assert hash_eval_sets_cached([root], cache, counting_map).equals(first) and calls == [2]
    scene(3).save(tmp_path / "tiny" / "c" / "2.png")  # another picture under the same name
    changed = hash_eval_sets_cached([root], cache, counting_map)
    assert calls == [2, 2]
    assert changed.column("phash256").to_pylist() != first.column("phash256").to_pylist()
    scene(4).save(tmp_path / "tiny" / "c" / "3.png")  # one more image
    assert hash_eval_sets_cached([root], cache, counting_map).num_rows == 3 and calls[-1] == 3
