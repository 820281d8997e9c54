"""`pipeline embed` and `pipeline search` on a small built dataset of coloured shapes."""

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import manifests
from pipeline.cli import main
from pipeline.testing.shapesite import CLASSES, shapes_site
from pipeline.testing.toydata import draw, encode
from tests.pipeline.test_build_clip import _build


@pytest.fixture(scope="module")
def embedded(tmp_path_factory, shapes_model):
    """A built dataset of 5 fresh images per class with right captions, embedded."""
    tmp = tmp_path_factory.mktemp("search")
    server, rows = shapes_site(per_class=5, mismatch=0.0, seed=23)
    try:
        out = _build(tmp, rows, "ds")
    finally:
        server.close()
    assert main(["embed", out, "--checkpoint", str(shapes_model)]) == 0
    return out, {r["url"]: (r["colour"], r["shape"]) for r in rows}, tmp


def _search(capsys, *argv) -> list[dict]:
    capsys.readouterr()
    assert main(["search", *map(str, argv), "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.timeout(900)
def test_text_query_ranks_the_named_shapes_first(embedded, capsys):
    """Every class named as a query; 5 of the 120 images are of it (chance for the top hit:
    0.04). The tiny model knows colours well and shapes less well (circles vs squares at 32 px),
    so colour is asserted for every query and the class on average."""
    out, truth, _ = embedded
    top1, at5 = [], []
    for colour, shape in CLASSES:
        hits = _search(capsys, out, f"a {colour} {shape}", "-k", 5)
        assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
        assert hits == sorted(hits, key=lambda h: -h["score"])
        found = [truth[h["url"]] for h in hits]
        assert found[0][0] == colour, (colour, shape, found)
        top1.append(found[0] == (colour, shape))
        at5.append(sum(f == (colour, shape) for f in found) / 5)
    print(f"top-1 {sum(top1) / len(top1):.3f}, precision@5 {sum(at5) / len(at5):.3f}")
    assert sum(top1) / len(top1) >= 0.7 and sum(at5) / len(at5) >= 0.55


@pytest.mark.timeout(900)
def test_image_query_finds_images_of_its_class(embedded, capsys):
    out, truth, tmp = embedded
    query = tmp / "query.png"
    query.write_bytes(encode(draw("green", "cross", random.Random(5)), "png"))
    hits = _search(capsys, out, "--image", query, "-k", 5)
    found = [truth[h["url"]] for h in hits]
    # 20 of the 120 images are green, 5 green crosses; the tiny model's image space is mostly
    # colour, so all five hits are green and a cross is among the first three
    assert all(f[0] == "green" for f in found) and ("green", "cross") in found[:3], found


@pytest.mark.timeout(900)
def test_embed_writes_scores_index_and_the_html_page(embedded, capsys):
    out, truth, tmp = embedded
    con = manifests.open(out)
    n, scored, emb_rows = con.execute(
        "SELECT count(*), count(clip_score), (SELECT count(*) FROM embeddings) "
        "FROM samples WHERE status = 'kept'"
    ).fetchone()
    assert n == len(truth) and scored == n and emb_rows == n
    meta = json.loads((tmp / "ds" / "embeddings" / "meta.json").read_text())
    assert meta["rows"] == n and meta["model"] == "clip-nano" and meta["index"]["kind"] == "flat"
    # resumable: a second run embeds nothing again and leaves the same vectors
    before = (tmp / "ds" / "embeddings" / "00000.parquet").stat().st_mtime_ns
    assert main(["embed", out, "--checkpoint", meta["checkpoint"]]) == 0
    assert (tmp / "ds" / "embeddings" / "00000.parquet").stat().st_mtime_ns == before
    page = tmp / "hits.html"
    assert main(["search", out, "a purple circle", "-k", "4", "--html", str(page)]) == 0
    text = page.read_text()
    assert text.count("<figure>") == 4 and text.count("data:image/jpeg;base64,") == 4
    assert "a purple circle" in text
    _looks_right_in_chromium(page, tmp / "hits.png")


def _looks_right_in_chromium(page, shot) -> None:
    """Render the page as a user would; the purple thumbnails must be on screen."""
    import shutil
    import subprocess

    from PIL import Image

    from pipeline.testing.browser import CHROMIUM_FLAGS

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium on this machine to render the page")
    subprocess.run(
        [
            browser,
            *CHROMIUM_FLAGS,  # loopback only: the page's thumbnails are data: URIs anyway
            f"--screenshot={shot}",
            "--window-size=1000,700",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    pixels = Image.open(shot).convert("RGB").getdata()
    purple = sum(1 for r, g, b in pixels if r > 100 and b > 120 and g < 80)
    assert purple > 2000, purple  # four thumbnails with purple shapes in them


def test_search_errors_are_one_line(tmp_path, embedded, capsys):
    out, _, _ = embedded
    assert main(["search", str(tmp_path), "a cat"]) == 2
    assert main(["search", out]) == 2
    assert main(["search", out, "a cat", "--image", str(tmp_path / "none.png")]) == 2
    assert main(["search", out, "--image", str(tmp_path / "none.png")]) == 2
    assert main(["search", out, "a cat", "-k", "0"]) == 2
    assert main(["embed", out, "--checkpoint", str(tmp_path / "none.pt")]) == 2
    not_an_image = tmp_path / "x.png"
    not_an_image.write_text("hello")
    assert main(["search", out, "--image", str(not_an_image)]) == 2
    meta = json.loads((Path(out) / "embeddings" / "meta.json").read_text())
    assert main(["embed", out, "--checkpoint", meta["checkpoint"], "--recall-target", "95"]) == 2
    # other weights than the embeddings were made with (latest.pt rewritten by more training)
    ckpt = torch.load(meta["checkpoint"], weights_only=True)
    ckpt["state_dict"]["logit_scale"] += 1.0
    torch.save(ckpt, tmp_path / "other.pt")
    assert main(["search", out, "a cat", "--checkpoint", str(tmp_path / "other.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 9 and "Traceback" not in err
    assert "not the checkpoint the embeddings were made with" in err


@pytest.mark.timeout(900)
def test_embed_follows_changed_shards_and_skips_unreadable_images(embedded, tmp_path, capsys):
    out, truth, _ = embedded
    copy = tmp_path / "ds"
    shutil.copytree(out, copy)
    meta = json.loads((copy / "embeddings" / "meta.json").read_text())
    shards = sorted((copy / "shards").glob("*.parquet"))
    gone = pq.read_metadata(shards[-1]).num_rows
    shards[-1].unlink()  # a shard removed: its embeddings go
    table = pq.read_table(shards[0])  # a shard rewritten: row 0's image no longer decodes
    images = table["jpg"].to_pylist()
    images[0] = b"not an image"
    table = table.set_column(table.schema.get_field_index("jpg"), "jpg", pa.array(images))
    pq.write_table(table.slice(0, table.num_rows - 1), shards[0])  # and one row shorter
    assert main(["embed", str(copy), "--checkpoint", meta["checkpoint"]]) == 0
    meta = json.loads((copy / "embeddings" / "meta.json").read_text())
    assert meta["rows"] == len(truth) - gone - 1 and meta["index"]["n"] == meta["rows"] - 1
    con = manifests.open(copy)
    unscored = con.execute("SELECT count(*) FROM embeddings WHERE clip_score IS NULL").fetchone()
    assert unscored == (1,)
    hits = _search(capsys, copy, "a red circle", "-k", meta["rows"])
    assert len(hits) == meta["rows"] - 1
    assert table["uid"][0].as_py() not in {h["uid"] for h in hits}


@pytest.mark.timeout(900)
def test_embed_and_search_a_dataset_on_s3_as_on_local_disk(embedded, shapes_model, s3, capsys):
    """The dataset and the checkpoint in a bucket: the same embeddings and the same hits."""
    from manifests.storage import location, upload_tree

    out, _, tmp = embedded
    local = tmp / "no-embeddings"
    shutil.copytree(out, local, ignore=shutil.ignore_patterns("embeddings"))
    upload_tree(local, f"{s3}/ds")
    (location(s3) / "models" / "nano.pt").upload(shapes_model)
    assert main(["embed", f"{s3}/ds", "--checkpoint", f"{s3}/models/nano.pt"]) == 0
    remote = location(s3) / "ds" / "embeddings"
    assert (remote / "meta.json").exists() and remote.glob("*.faiss")
    for query in ("a red circle", "a blue square"):
        want = _search(capsys, out, query, "-k", 5)
        got = _search(capsys, f"{s3}/ds", query, "-k", 5)
        assert [h["url"] for h in got] == [h["url"] for h in want]
        assert [h["score"] for h in got] == pytest.approx([h["score"] for h in want], abs=1e-5)


@pytest.mark.timeout(900)
def test_a_removed_image_leaves_the_embeddings_the_index_and_every_search(embedded, capsys):
    """`pipeline remove` of the top hits of a query: they are never found again, by that query
    or any other, the index holds that many vectors fewer, and `embed` does not bring them back."""
    import faiss

    from pipeline.embed.store import read_vectors

    out, truth, tmp = embedded
    copy = tmp / "removed"
    shutil.copytree(out, copy)
    hits = _search(capsys, copy, "a purple circle", "-k", 3)
    uids = [h["uid"] for h in hits]
    asked = tmp / "uids.txt"
    asked.write_text("\n".join(uids) + "\n")
    before = faiss.read_index(str(copy / "embeddings" / "image.faiss")).ntotal
    argv = ["remove", str(copy), "--uids", str(asked), "--requested-by", "a", "--reason", "b"]
    assert main(argv) == 0
    assert faiss.read_index(str(copy / "embeddings" / "image.faiss")).ntotal == before - 3
    meta, vectors = read_vectors(copy / "embeddings", "image")
    gone = [i for i, uid in enumerate(meta["uid"].to_pylist()) if uid in uids]
    assert len(gone) == 3 and np.isnan(vectors[gone]).all()
    checkpoint = json.loads((copy / "embeddings" / "meta.json").read_text())["checkpoint"]
    assert main(["embed", str(copy), "--checkpoint", checkpoint]) == 0  # nothing comes back
    assert faiss.read_index(str(copy / "embeddings" / "image.faiss")).ntotal == before - 3
    for query in ("a purple circle", "a red square", "a green cross"):
        found = _search(capsys, copy, query, "-k", 20)
        assert len(found) == 20 and not {h["uid"] for h in found} & set(uids)
