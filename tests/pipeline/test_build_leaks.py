"""Eval-set decontamination and near-duplicates in a build of the loopback test site."""

import io

import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageOps

import manifests
from pipeline.build import run_build
from pipeline.buildconfig import BuildConfig
from pipeline.testing.site import picture


def _eval_set(root):
    """cat: the site's cat image as is; horse: the site's horse mirrored; lamp: an image the
    site does not have."""
    for name in ("cat", "horse", "lamp"):
        (root / name).mkdir(parents=True)
    (root / "cat" / "cat.png").write_bytes(picture("/img/cat.png", "PNG"))
    horse = Image.open(io.BytesIO(picture("/img/horse.png", "PNG"))).convert("RGB")
    ImageOps.mirror(horse).save(root / "horse" / "h.png")
    (root / "lamp" / "lamp.png").write_bytes(picture("a lamp", "PNG"))
    return root


@pytest.mark.timeout(180)
def test_planted_eval_copies_are_leaks_and_overlap_marks_exactly_them(tmp_path, test_site):
    site, _ = test_site
    evalset = _eval_set(tmp_path / "pets")
    queries = tmp_path / "queries.txt"
    queries.write_text("cat\ndog\nbird\nfish\nowl\nhorse\n")
    config = BuildConfig.of(
        out=str(tmp_path / "ds"),
        query_list=str(queries),
        seeds=[site.base],
        allow_network=["127.0.0.1/32"],
        timeout=3.0,
        executor="local",
        image_size=64,
        eval_set=[str(evalset)],
        near_dup_radius=4,
    )
    run_build(config)
    con = manifests.open(config.out)
    leaks = dict(
        con.execute("SELECT url, leak_of FROM samples WHERE status = 'eval_leak'").fetchall()
    )
    base = site.base
    assert leaks == {
        f"{base}img/cat.png": "pets/cat/cat.png",
        f"{base}img/copy-of-cat.png": "pets/cat/cat.png",  # the same bytes under another URL
        f"{base}img/horse.png": "pets/horse/h.png",  # mirrored in the eval set
    }
    overlap = pq.read_table(f"{config.out}/overlap.parquet").to_pylist()
    marked = {row["eval_id"]: row["has_copy"] for row in overlap}
    assert marked == {
        "pets/cat/cat.png": True,
        "pets/horse/h.png": True,
        "pets/lamp/lamp.png": False,
    }
    kept = con.execute("SELECT count(*) FROM samples WHERE status = 'kept'").fetchone()[0]
    assert kept >= 5  # the other distinct images are neither leaks nor near-duplicates
