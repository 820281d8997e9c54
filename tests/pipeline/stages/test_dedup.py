import pyarrow as pa
import pytest

from pipeline.stages.images import IMAGE_COLUMNS
from tests.pipeline.stages.conftest import sample_rows

pytestmark = pytest.mark.timeout(60)

HASH = "0" * 64


def _images(uids):
    return pa.table(
        {
            "uid": uids,
            "image": [b"x"] * len(uids),
            "exif": [None] * len(uids),
            "phash256": [HASH] * len(uids),
            "phash256_trim": [HASH] * len(uids),
        },
        schema=pa.schema([(n, IMAGE_COLUMNS[n]) for n in IMAGE_COLUMNS]),
    )


def test_same_bytes_keep_each_caption_once_across_parts(bench):
    """Rows with the bytes of an earlier row: another caption stays beside its image (image_of),
    the same caption (after case and space folding) is a duplicate of its first row."""
    b = bench(parts=["p0", "p1"])
    first = sample_rows(
        [
            {"url": "http://a.test/1.jpg", "caption": "one", "sha256": "aa", "phash": "0" * 16},
            {"url": "http://a.test/2.jpg", "caption": "two", "sha256": "bb", "phash": "f" * 16},
            {
                "url": "http://a.test/3.jpg",
                "caption": "gone",
                "sha256": "aa",
                "status": "too_small",
            },
        ]
    )
    second = sample_rows(
        [
            {"url": "http://b.test/1.jpg", "caption": " One", "sha256": "aa", "phash": "0" * 16},
            {"url": "http://b.test/2.jpg", "caption": "another", "sha256": "aa", "phash": "0" * 16},
        ]
    )
    for part, rows in (("p0", first), ("p1", second)):
        b.put("images", part, rows)
        pending = [
            u
            for u, s in zip(rows["uid"].to_pylist(), rows["status"].to_pylist(), strict=True)
            if s == "pending"
        ]
        b.put("images", part, _images(pending), kind="images")
    record = b.run("dedup")
    p0, p1 = b.rows("dedup", "p0"), b.rows("dedup", "p1")
    assert [r["status"] for r in p0] == ["pending", "pending", "too_small"]
    assert p1[0]["status"] == "duplicate" and p1[0]["dup_of"] == p0[0]["uid"]
    assert p1[1]["status"] == "pending" and p1[1]["dup_of"] is None
    assert p0[0]["image_of"] == p1[1]["image_of"] == p0[0]["uid"]
    assert p0[1]["image_of"] is None  # an image with one caption
    assert p0[2]["dup_of"] is None  # not pending: no decision reaches it
    assert (record["rows_in"], record["rows_out"], record["drops"]) == (4, 3, {"duplicate": 1})
    assert record["extra"]["captions_joined"] == 2
    assert b.marker("dedup", "p1")["drops"] == {"duplicate": 1}  # each part applies its own


def _oracle(b, parts):
    """The single-process decisions the dedup stage made before it ran as phases of tasks:
    pipeline.dedup.decide over every pending row with an image, in source order."""
    import pyarrow.parquet as pq

    from pipeline.dedup.decide import decide
    from pipeline.dedup.evalsets import hash_eval_sets

    pending = []
    for part in parts:
        side = pq.read_table(b.layout.stage_dir("images") / f"{part}.images.parquet").to_pylist()
        hashes = {r["uid"]: r for r in side}
        for row in b.rows("images", part):
            if row["status"] == "pending" and row["uid"] in hashes:
                pending.append({**row, **hashes[row["uid"]]})
    table = {
        "uid": [r["uid"] for r in pending],
        "width": [r["original_width"] for r in pending],
        "height": [r["original_height"] for r in pending],
        **{
            k: [r[k] for r in pending]
            for k in ("caption", "sha256", "phash", "phash256", "phash256_trim", "image")
        },
    }
    eval_table = hash_eval_sets(b.config.dedup.eval_set)
    return decide(table, eval_table, b.config.dedup)


FIELDS = ("status", "dup_of", "leak_of", "image_of", "error")


def _stage_decisions(b, parts) -> dict:
    """uid → (status, dup_of, leak_of, image_of, error) of every row the stage decided on."""
    return {
        r["uid"]: tuple(r[f] for f in FIELDS)
        for part in parts
        for r in b.rows("dedup", part)
        if r["status"] in ("duplicate", "eval_leak") or r["image_of"] is not None
    }


def _oracle_decisions(updates: dict) -> dict:
    return {u: tuple(x.get(f) for f in FIELDS) for u, x in updates.items()}


def _random_parts(b, parts, eval_hashes, seed=0):
    """Rows with shared bytes across parts, phash clusters (chains of 1-3 bit flips), missing
    and malformed phashes, rows that are not pending, and copies of two eval images."""
    import numpy as np

    rng = np.random.default_rng(seed)
    bases = rng.integers(0, 2**63, size=40, dtype=np.int64).astype(np.uint64)
    shas = [f"{rng.integers(0, 2**62):016x}" * 4 for _ in range(150)]
    for p, part in enumerate(parts):
        rows, images = [], []
        for i in range(110):
            value = bases[rng.integers(0, 40)]
            for bit in rng.choice(64, size=rng.integers(0, 4), replace=False):
                value ^= np.uint64(1) << np.uint64(bit)
            phash = f"{int(value):016x}" if i % 17 else (None if i % 2 else "zz" * 8)
            row = {
                "url": f"http://h{i % 7}.test/{part}/{i}.jpg",
                "caption": f"c{rng.integers(0, 12)}",  # repeated: same bytes, same caption
                "sha256": shas[rng.integers(0, 150)],
                "phash": phash,
                "original_width": int(rng.integers(10, 60)),
                "original_height": int(rng.integers(10, 60)),
                "status": "pending" if i % 23 else "too_small",
            }
            copy = eval_hashes[(p + i) % 2] if i % 31 == 5 else None
            rows.append(row)
            images.append(copy)
        table = sample_rows(rows)
        b.put("images", part, table)
        uids = [r["uid"] for r in table.to_pylist() if r["status"] == "pending"]
        side = _images(uids[:-3])  # the last three were not fetched: dedup never sees them
        h256 = [f"{rng.integers(0, 2**62):016x}" * 4 for _ in side["uid"].to_pylist()]
        trim = list(h256)
        for k, uid in enumerate(side["uid"].to_pylist()):
            copy = dict(zip(table["uid"].to_pylist(), images, strict=True))[uid]
            if copy:
                h256[k], trim[k] = copy["phash256"], copy["phash256_trim"]
        side = side.set_column(3, "phash256", pa.array(h256)).set_column(
            4, "phash256_trim", pa.array(trim)
        )
        b.put("images", part, side, kind="images")


@pytest.mark.parametrize("buckets", [1, 5])
def test_phases_give_the_single_process_decisions(bench, tmp_path, buckets):
    import pyarrow.parquet as pq

    from pipeline.dedup.hashes import image_hashes
    from pipeline.dedup.leaks import write_overlap
    from tests.pipeline.dedup.images import scene
    from tests.pipeline.dedup.test_leaks import make_eval_set
    from tests.pipeline.stages.conftest import Wide

    pictures = {"cat/a.png": scene(1), "dog/b.png": scene(2)}
    evals = make_eval_set(tmp_path, "pets", pictures)
    parts = ["p0", "p1", "p2", "p3"]
    b = bench(parts=parts, eval_set=[evals], near_dup_radius=4)
    _random_parts(b, parts, [image_hashes(p) for p in pictures.values()])
    record = b.run("dedup", executor=Wide(buckets))
    updates, leaks = _oracle(b, parts)
    want = _oracle_decisions(updates)
    assert _stage_decisions(b, parts) == want
    statuses = [s for s, *_ in want.values()]
    assert statuses.count("eval_leak") >= 4 and statuses.count("duplicate") > 60  # it bites
    assert statuses.count("pending") > 60  # captions joined to an image another row holds
    errors = {e for *_, e in want.values()}
    assert any(e and "with the same caption" in e for e in errors)  # clusters' captions
    assert record["extra"]["buckets"] == buckets
    oracle_overlap = write_overlap(
        tmp_path / "want.parquet",
        pq.read_table(b.layout.stage_dir("dedup") / "eval_hashes.parquet"),
        leaks,
    )
    assert pq.read_table(b.layout.root / "overlap.parquet").equals(pq.read_table(oracle_overlap))


def test_a_radius_the_distributed_search_cannot_serve_fails_before_any_work(bench):
    from manifests.config import ConfigError
    from pipeline.stages import registry
    from pipeline.stages.base import StageRun

    b = bench(near_dup_radius=16)
    stage = registry.get("dedup")
    run = StageRun(b.layout, stage, registry.resolve_inputs(stage, b.config), b.config)
    with pytest.raises(ConfigError, match="handles at most 12 bits"):
        stage.check_config(run)


def _real_parts(b, parts, pictures, shas=None):
    """Parts holding `pictures` (PIL images) round-robin, with real bytes and hashes; `shas`:
    the sha256 of each picture (default: all distinct)."""
    import io

    from pipeline.dedup.hashes import image_hashes

    for p, part in enumerate(parts):
        mine = list(range(p, len(pictures), len(parts)))
        blobs, hashes = [], []
        for k in mine:
            buf = io.BytesIO()
            pictures[k].save(buf, "PNG")
            blobs.append(buf.getvalue())
            hashes.append(image_hashes(pictures[k]))
        rows = sample_rows(
            [
                {
                    "url": f"http://h.test/{part}/{k}.png",
                    "sha256": shas[k] if shas else f"{k:064d}",
                    "phash": h["phash"],
                    "original_width": pictures[k].width,
                    "original_height": pictures[k].height,
                }
                for k, h in zip(mine, hashes, strict=True)
            ]
        )
        b.put("images", part, rows)
        side = _images(rows["uid"].to_pylist())
        for column, name in ((1, "image"), (3, "phash256"), (4, "phash256_trim")):
            values = blobs if name == "image" else [h[name] for h in hashes]
            side = side.set_column(column, name, pa.array(values, IMAGE_COLUMNS[name]))
        b.put("images", part, side, kind="images")


def _decided(b, parts, status: str, column: str) -> dict:
    """uid → (column, error) of the dedup stage's rows with `status`, over every part."""
    return {
        r["uid"]: (r[column], r["error"])
        for part in parts
        for r in b.rows("dedup", part)
        if r["status"] == status
    }


def test_verified_leaks_equal_the_single_process_decisions(bench, tmp_path):
    """--leak-verify orb: the tasks read the eval side's stored features and variants and the
    candidates' bytes from work/images, and decide what decide() decides over the same rows."""
    from tests.pipeline.dedup.images import scene
    from tests.pipeline.dedup.test_leaks import make_eval_set
    from tests.pipeline.dedup.test_verify import worst_copies
    from tests.pipeline.stages.conftest import Wide

    evals = make_eval_set(tmp_path, "pets", {"cat/a.png": scene(1), "dog/b.png": scene(2)})
    pictures = [im for s in (1, 2) for im in worst_copies(scene(s)).values()]
    pictures += [scene(s) for s in range(30, 42)]  # not copies
    parts = ["p0", "p1", "p2"]
    b = bench(parts=parts, eval_set=[evals], leak_verify="orb")
    _real_parts(b, parts, pictures)
    b.run("dedup", executor=Wide(2))
    updates, leaks = _oracle(b, parts)
    got = _decided(b, parts, "eval_leak", "leak_of")
    assert got == {u: (x["leak_of"], x["error"]) for u, x in updates.items()}
    verified = [leak for leak in leaks if leak.inliers is not None]
    assert len(leaks) >= 12 and len(verified) >= 2  # the turns are verified
    assert (b.layout.stage_dir("dedup") / "eval_features.parquet").exists()


def test_embedding_candidates_equal_the_single_process_decisions(bench, tmp_path):
    """--leak-embed: the driver stores the eval embeddings once; each task embeds its own pool
    images and proposes their neighbours to the same verification as decide() does."""
    from tests.pipeline.dedup.images import scene
    from tests.pipeline.dedup.test_leakembed import turned_crop
    from tests.pipeline.dedup.test_leaks import make_eval_set
    from tests.pipeline.stages.conftest import Wide
    from tests.trainer.evaluation.helpers import save_checkpoint

    evals = make_eval_set(tmp_path, "pets", {"cat/a.png": scene(1), "dog/b.png": scene(2)})
    pictures = [turned_crop(scene(s)) for s in (1, 2)]  # only the embeddings propose them
    pictures += [scene(s) for s in range(30, 36)]  # not copies
    parts = ["p0", "p1"]
    checkpoint = str(save_checkpoint(tmp_path / "m.pt"))
    options = {"leak_verify": "orb", "leak_embed": checkpoint, "leak_embed_min_cosine": -1.0}
    b = bench(parts=parts, eval_set=[evals], **options)
    _real_parts(b, parts, pictures)

    class Asking(Wide):  # records what each phase's tasks ask for beyond a CPU
        asked: dict = {}

        def map(self, fn, items, name=None, resources=None, pool=False):
            items = list(items)
            for item in items:
                self.asked[getattr(item, "phase", "part")] = resources
            return super().map(fn, items, name, resources, pool)

    b.run("dedup", executor=Asking(2))
    assert Asking.asked["hash"] == {"num_gpus": 1}  # device auto: a GPU where the cluster has one
    assert Asking.asked["exact"] is None and Asking.asked["final"] is None
    updates, leaks = _oracle(b, parts)
    got = _decided(b, parts, "eval_leak", "leak_of")
    assert got == {u: (x["leak_of"], x["error"]) for u, x in updates.items()}
    assert len(leaks) == 2 and all(leak.cosine is not None for leak in leaks)
    assert all("proposed by the image embeddings" in error for _, error in got.values())
    assert (b.layout.stage_dir("dedup") / "eval_embeddings.parquet").exists()


@pytest.mark.parametrize("buckets", [1, 3])
def test_verified_near_duplicates_equal_the_single_process_decisions(bench, buckets):
    """--near-dup-verify orb over four parts: mirrored, padded and re-encoded copies of two
    scenes spread over the parts, exact duplicates, flat images, and unrelated scenes."""
    from PIL import Image, ImageOps

    from tests.pipeline.dedup.images import jpeg, scene
    from tests.pipeline.stages.conftest import Wide

    pictures, shas = [], []
    for s in (1, 2):
        original = scene(s, size=160)
        for copy in (
            original,
            ImageOps.mirror(original),
            ImageOps.expand(original.resize((110, 110)), border=25, fill="black"),
            jpeg(ImageOps.mirror(original).resize((100, 100)), 50),
            original,  # the same bytes again: an exact duplicate
        ):
            pictures.append(copy)
            shas.append(f"{s}{len(pictures) if copy is not original else 0:063d}")
    pictures += [Image.new("RGB", (40 + k, 40 + k), (200, 30, 30)) for k in range(3)]
    pictures += [scene(s, size=160) for s in range(60, 70)]
    shas += [f"9{k:063d}" for k in range(len(pictures) - len(shas))]
    parts = ["p0", "p1", "p2", "p3"]
    b = bench(parts=parts, near_dup_radius=8, near_dup_verify="orb")
    _real_parts(b, parts, pictures, shas)
    b.run("dedup", executor=Wide(buckets))
    updates, _ = _oracle(b, parts)
    assert _stage_decisions(b, parts) == _oracle_decisions(updates)
    got = _decided(b, parts, "duplicate", "dup_of")
    reasons = [error for _, error in got.values()]
    assert sum("mirrored" in e for e in reasons) >= 4  # two mirrors and two mirrored JPEGs
    assert sum("phash within 8 bits" in e for e in reasons) >= 2  # the flat images, at least
    # the second original is a duplicate of the first, or (where the mirror represents the
    # cluster) a near-duplicate of the representative's row with the same caption
    assert sum(e == "same bytes and caption as dup_of" for e in reasons) >= 1
    assert len(got) == 2 * 4 + 2  # each scene keeps one row; one flat image stays
