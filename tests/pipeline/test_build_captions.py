"""One image, all its captions: rows that share image bytes are stored once with every caption
that survived the text stages; only a repeated caption is a duplicate."""

import csv
import io

import pyarrow.parquet as pq
import pytest
from PIL import Image

import manifests
from pipeline.build import run_build
from pipeline.buildconfig import BuildConfig
from pipeline.loopback import LoopbackServer
from pipeline.testing.toydata import COLOURS, SHAPES, draw, encode

pytestmark = pytest.mark.timeout(300)

CLASSES = [(c, s) for c in list(COLOURS)[:3] for s in SHAPES[:2]]  # 6 images


def _site():
    """(server, rows): six shape PNGs, each on two URLs with two captions each (one repeated
    after case and space folding, one in German), and a smaller copy of the first one."""
    import random

    rng = random.Random(3)
    routes, rows = {}, []
    for i, (colour, shape) in enumerate(CLASSES):
        img = draw(colour, shape, rng, size=96)
        data = encode(img, "png")
        for copy in ("a", "b"):
            routes[f"/img/{i}{copy}.png"] = (200, {"Content-Type": "image/png"}, data)
        rows += [
            (f"img/{i}a.png", f"a {colour} {shape}"),
            (f"img/{i}a.png", f"{colour} {shape} icon, flat style"),
            (f"img/{i}b.png", f"A {colour.title()}  {shape.title()} "),  # = the first caption
            (f"img/{i}b.png", f"ein {colour} {shape} auf weiß, gezeichnet"),  # language: dropped
            (f"img/{i}b.png", f"the {shape} is {colour}"),
        ]
        if i == 0:
            small = io.BytesIO()
            img.resize((80, 80), Image.LANCZOS).save(small, "PNG")
            routes["/img/small.png"] = (200, {"Content-Type": "image/png"}, small.getvalue())
            rows += [("img/small.png", "a smaller copy of it"), ("img/small.png", rows[0][1])]
    server = LoopbackServer("127.0.0.1", routes=routes).start()
    return server, [(server.base + path, caption) for path, caption in rows]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("captions")
    server, rows = _site()
    try:
        urls = tmp / "urls.csv"
        with open(urls, "w", newline="") as fh:
            csv.writer(fh).writerows([("url", "caption"), *rows])
        config = BuildConfig.of(
            out=str(tmp / "ds"),
            url_list=str(urls),
            rows_per_part=4,  # an image's rows spread over parts
            executor="local",
            allow_network=["127.0.0.1/32"],
            timeout=5.0,
            languages=["en"],
            image_size=64,
            shard_size=4,
            near_dup_radius=6,
        )
        run_build(config)
    finally:
        server.close()
    return config.out, rows


def _shard_rows(out) -> dict[tuple[str, int], dict]:
    from pathlib import Path

    found = {}
    for path in sorted(Path(out, "shards").glob("*.parquet")):
        for i, row in enumerate(pq.read_table(path).to_pylist()):
            found[(path.name, i)] = row
    return found


def test_each_image_is_stored_once_with_every_caption(built):
    out, rows = built
    con = manifests.open(out)
    kept = con.execute(
        "SELECT uid, url, caption, shard, shard_row, caption_index, image_of FROM samples "
        "WHERE status = 'kept'"
    ).fetchall()
    shards = _shard_rows(out)
    assert len(shards) == len(CLASSES)  # the smaller copy joined the first image
    assert len(kept) == 3 * len(CLASSES) + 1  # three distinct English captions each, + the copy's
    for _uid, _url, caption, shard, shard_row, caption_index, image_of in kept:
        stored = shards[(shard, shard_row)]
        assert stored["captions"][caption_index] == caption
        assert stored["uid"] == image_of
    for stored in shards.values():
        assert stored["caption"] == stored["captions"][0] and len(stored["captions"]) >= 3
        assert stored["url"].endswith("a.png")  # the image row: the first with those bytes
    first = next(s for s in shards.values() if s["url"].endswith("/img/0a.png"))
    assert "a smaller copy of it" in first["captions"]


def test_only_a_repeated_caption_is_a_duplicate(built):
    out, _ = built
    con = manifests.open(out)
    dups = con.execute(
        "SELECT d.caption, k.caption, d.error FROM samples d JOIN samples k ON d.dup_of = k.uid "
        "WHERE d.status = 'duplicate'"
    ).fetchall()
    assert len(dups) == len(CLASSES) + 1  # "A Red  Circle " and the copy's repeated caption
    for caption, kept_caption, _ in dups:
        assert " ".join(caption.casefold().split()) == kept_caption.casefold()
    errors = {e for *_, e in dups}
    assert "same bytes and caption as dup_of" in errors
    assert any("near-duplicate" in e and "same caption" in e for e in errors)
    (dropped,) = con.execute("SELECT count(*) FROM samples WHERE status = 'language'").fetchone()
    assert dropped == len(CLASSES)
    captions = [c for s in _shard_rows(out).values() for c in s["captions"]]
    assert not any(c.startswith("ein ") for c in captions)  # a filtered caption is not merged in


def test_images_view_gives_one_row_per_image(built):
    out, _ = built
    con = manifests.open(out)
    got = con.execute("SELECT shard, shard_row, captions, n_captions FROM images").fetchall()
    shards = _shard_rows(out)
    assert len(got) == len(shards)
    for shard, shard_row, captions, n in got:
        assert captions == shards[(shard, shard_row)]["captions"] and n == len(captions)


@pytest.mark.timeout(600)
def test_search_finds_an_image_by_its_place_when_its_first_caption_leaves(
    built, shapes_model, tmp_path, capsys
):
    """`pipeline search` over images with several captions: each stored image is found once,
    under its first kept caption, also after `pipeline remove` took only that caption (the
    shard row's uid is that caption's row, no longer kept; its siblings keep the image)."""
    import json
    import shutil

    from pipeline.cli import main

    out = tmp_path / "ds"
    shutil.copytree(built[0], out)
    assert main(["embed", str(out), "--checkpoint", str(shapes_model)]) == 0

    def search() -> list[dict]:
        capsys.readouterr()
        args = ["search", str(out), "a red circle", "-k", str(len(CLASSES)), "--format", "json"]
        assert main(args) == 0
        return json.loads(capsys.readouterr().out)

    def first_captions() -> dict:
        con = manifests.open(out)
        rows = con.execute("SELECT shard, shard_row, captions[1] FROM images").fetchall()
        return {(shard, row): caption for shard, row, caption in rows}

    hits = search()
    assert {(h["shard"], h["shard_row"]): h["caption"] for h in hits} == first_captions()
    kept = {
        u
        for (u,) in manifests.open(out)
        .execute("SELECT uid FROM samples WHERE status = 'kept'")
        .fetchall()
    }
    assert {h["uid"] for h in hits} <= kept
    head = hits[0]
    asked = tmp_path / "uids.txt"
    asked.write_text(head["uid"] + "\n")
    argv = ["remove", str(out), "--uids", str(asked), "--requested-by", "a", "--reason", "b"]
    assert main(argv) == 0
    con = manifests.open(out)
    assert con.execute(f"SELECT status FROM samples WHERE uid = '{head['uid']}'").fetchone() == (
        "removed",
    )
    after = search()
    place = (head["shard"], head["shard_row"])
    assert len(after) == len(CLASSES) and place in {(h["shard"], h["shard_row"]) for h in after}
    assert {(h["shard"], h["shard_row"]): h["caption"] for h in after} == first_captions()
    moved = next(h for h in after if (h["shard"], h["shard_row"]) == place)
    assert moved["caption"] != head["caption"] and moved["uid"] != head["uid"]
    statuses = dict(con.execute("SELECT uid, status FROM samples").fetchall())
    assert all(statuses[h["uid"]] == "kept" for h in after)  # a hit names a kept row
    from pipeline.embed.search import Searcher

    searcher = Searcher(str(out))  # "images like this one" from the row that now heads it
    assert searcher.row_vector(moved["uid"]) is not None
    assert searcher.hits(searcher.row_vector(moved["uid"]), 1)[0].shard_row == place[1]


def test_a_caption_balancing_dropped_is_not_merged_in(tmp_path):
    """MetaCLIP's balancing decides per (image, caption) pair before any image is fetched: of
    eight captions of one image that match an over-full query, those not drawn end as
    `over_query_cap`, one matching no query as `no_query_match`, and neither joins the image's
    stored captions; the drawn ones all do."""
    img = draw("red", "circle", __import__("random").Random(5), size=96)
    routes = {"/img/c.png": (200, {"Content-Type": "image/png"}, encode(img, "png"))}
    server = LoopbackServer("127.0.0.1", routes=routes).start()
    try:
        captions = [f"a red circle, picture {i}" for i in range(8)] + ["an icon"]
        urls, queries = tmp_path / "urls.csv", tmp_path / "queries.txt"
        with open(urls, "w", newline="") as fh:
            csv.writer(fh).writerows(
                [("url", "caption")] + [(server.base + "img/c.png", c) for c in captions]
            )
        queries.write_text("circle\n")
        config = BuildConfig.of(
            out=str(tmp_path / "ds"),
            url_list=str(urls),
            query_list=str(queries),
            per_query_cap=2,
            executor="local",
            allow_network=["127.0.0.1/32"],
            timeout=5.0,
            image_size=64,
        )
        run_build(config)
    finally:
        server.close()
    con = manifests.open(config.out)
    status = dict(con.execute("SELECT caption, status FROM samples").fetchall())
    assert status["an icon"] == "no_query_match"
    capped = {c for c, s in status.items() if s == "over_query_cap"}
    kept = {c for c, s in status.items() if s == "kept"}
    assert capped and kept and len(capped) + len(kept) == 8
    (stored,) = _shard_rows(config.out).values()
    assert set(stored["captions"]) == kept
