"""`pipeline remove`: takedown requests on a dataset crawled from two sites (fake DNS to
loopback): the rows become `removed`, and their captions and image bytes leave every file."""

import json
import shutil
import subprocess
import tarfile

import pyarrow.parquet as pq
import pytest

import manifests
from pipeline.build import run_build
from pipeline.buildconfig import BuildConfig
from pipeline.cli import main
from pipeline.loopback import LoopbackServer
from pipeline.net.policy import StaticResolver
from pipeline.recheck import recheck
from pipeline.testing.crash import KILLED, killed_after
from pipeline.testing.site import picture
from pipeline.testing.takedown import content_hits, distinctive

pytestmark = pytest.mark.timeout(240)

PNG = {"Content-Type": "image/png"}
HTML = {"Content-Type": "text/html"}
HOSTS = ("site.test", "cdn.site.test", "other.test")
# page -> (image URL path on host, alt text); a.png is on both pages, under two captions
PAGES = {
    "site.test/p1.html": [
        ("cdn.site.test/img/a.png", "a cat on a mat"),
        ("site.test/img/b.png", "a cat in a box"),
    ],
    "other.test/p2.html": [
        ("other.test/img/c.png", "a cat in the sun"),
        ("other.test/img/d.png", "a cat and a dog"),
        ("cdn.site.test/img/a.png", "the same cat on a mat"),
    ],
}


def _routes(port: int) -> dict:
    routes = {"/robots.txt": (200, {"Content-Type": "text/plain"}, b"User-agent: *\nAllow: /\n")}
    for page, images in PAGES.items():
        tags = "".join(
            f'<img src="http://{u.split("/", 1)[0]}:{port}/{u.split("/", 1)[1]}" alt="{alt}">'
            for u, alt in images
        )
        routes["/" + page.split("/", 1)[1]] = (
            200,
            HTML,
            f"<html><body>{tags}</body></html>".encode(),
        )
        for url, _ in images:
            name = url.rsplit("/", 1)[1]
            routes[f"/img/{name}"] = (200, PNG, picture(f"takedown-{name}", size=64))
    return routes


def url(server, host_path: str) -> str:
    host, path = host_path.split("/", 1)
    return f"http://{host}:{server.port}/{path}"


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """The dataset as built, once; each test works on a copy."""
    tmp = tmp_path_factory.mktemp("takedown")
    resolver = StaticResolver(dict.fromkeys(HOSTS, "127.0.0.1"))
    with LoopbackServer(routes={}) as server:
        server.routes.update(_routes(server.port))
        (tmp / "queries.txt").write_text("cat\n")
        config = BuildConfig.of(
            out=str(tmp / "ds"),
            seeds=[url(server, p) for p in PAGES],
            max_depth=0,
            query_list=str(tmp / "queries.txt"),
            allow_network=["127.0.0.1/32"],
            timeout=5.0,
            max_retries=0,
            executor="local",
            min_size=16,
            image_size=32,
            webdataset=True,
            shard_size=2,
        )
        run_build(config, resolver=resolver)
        yield tmp / "ds", server, config, resolver


@pytest.fixture
def built(original, tmp_path):
    """A copy of the built dataset, and the build's config pointed at the copy."""
    source, server, config, resolver = original
    out = tmp_path / "ds"
    shutil.copytree(source, out)
    run = json.loads((out / "run.json").read_text())
    run["config"]["out"] = str(out)  # as if built here: a rerun of the build resumes it
    (out / "run.json").write_text(json.dumps(run))
    copy = BuildConfig.from_options({**config.options(), "out": str(out)})
    return out, server, copy, resolver


def _rows(out, version=None) -> dict:
    """caption -> (status, error, shard, shard_row, uid, url); a removed row (no caption any
    more) under ("removed", url, uid)."""
    con = manifests.open(out, version=version)
    found = con.execute(
        "SELECT caption, status, error, shard, shard_row, uid, url FROM samples"
    ).fetchall()
    return {r[0] if r[0] is not None else ("removed", r[6], r[5]): r[1:] for r in found}


def _kept(out) -> dict:
    return {k: v[0] for k, v in _rows(out).items() if not isinstance(k, tuple)}


def _request(tmp_path, name: str, lines) -> str:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


WHO = ("Jane Doe <jane@example.org>", "DMCA notice 42")


def _argv(out, kind, file, *more) -> list[str]:
    return [
        "remove",
        str(out),
        f"--{kind}",
        file,
        "--requested-by",
        WHO[0],
        "--reason",
        WHO[1],
        *more,
    ]


def _needles(out, captions) -> dict[str, bytes]:
    """The captions, and the distinctive bytes of their shard images and fetched originals."""
    con = manifests.open(out)
    needles = {}
    for caption in captions:
        shard, row, image_url = con.execute(
            "SELECT shard, shard_row, url FROM samples WHERE caption = ?", [caption]
        ).fetchone()
        needles[caption] = caption.encode()
        stored = pq.read_table(out / "shards" / shard).to_pylist()[row]["jpg"]
        needles[f"{caption} (shard image)"] = distinctive(stored)
        for part in (out / "work" / "fetch").glob("lane*.parquet"):
            for r in pq.read_table(part, columns=["url", "image"]).to_pylist():
                if r["url"] == image_url:
                    needles[f"{caption} (fetched image)"] = distinctive(r["image"])
    return needles


def test_a_url_takedown_takes_the_rows_content_out_of_every_file(built, tmp_path, capsys):
    out, server, _, _ = built
    before = _rows(out)
    b_url = url(server, "site.test/img/b.png")
    uid = before["a cat in a box"][4]
    needles = _needles(out, ["a cat in a box"])
    assert len(needles) == 3 and len(content_hits(out, needles)) > 5  # the scan sees them
    asked = _request(
        tmp_path,
        "urls.txt",
        ["# notice 42", b_url.replace("site.test", "SITE.test"), "https://nowhere.test/x.png"],
    )
    assert main(_argv(out, "urls", asked, "--request-id", "notice-42")) == 0
    assert "1 rows removed (1 of them kept), 1 images out of the shards" in capsys.readouterr().out

    assert content_hits(out, needles) == []  # manifests, work/, shards, tars: nothing left
    after = _rows(out)
    status, error, shard, shard_row, _, _ = after[("removed", b_url, uid)]
    assert (status, shard, shard_row) == ("removed", None, None)
    assert error.startswith("removed on 20") and WHO[0] in error and WHO[1] in error
    # every other row as it was, its shard row still holds its image
    rest = {k: v for k, v in before.items() if k != "a cat in a box"}
    assert {k: after[k] for k in rest} == rest
    for caption, (status, _, shard, row, _, _) in rest.items():
        if status == "kept":
            assert caption in pq.read_table(out / "shards" / shard).to_pylist()[row]["captions"]
    # the version before is purged too; the audit says who, why, what, and what matched nothing
    assert ("removed", b_url, uid) in _rows(out, version=1)
    audit = (
        manifests.open(out)
        .execute(
            "SELECT request_id, requested_by, reason, match, value, uid, status_before, "
            "image_removed FROM removals ORDER BY value"
        )
        .fetchall()
    )
    asked_url = b_url.replace("site.test", "SITE.test")
    assert audit == [
        ("notice-42", *WHO, "url", asked_url, uid, "kept", True),
        ("notice-42", *WHO, "url", "https://nowhere.test/x.png", None, None, False),
    ]
    # the shard keeps its rows in place; its tar, stats and sizes.json count what is left
    _, _, shard, row, *_ = before["a cat in a box"]
    table = pq.read_table(out / "shards" / shard).to_pylist()
    assert (table[row]["status"], table[row]["jpg"], table[row]["caption"]) == ("removed", b"", "")
    with tarfile.open(out / "shards" / shard.replace(".parquet", ".tar")) as tar:
        keys = {m.name.split(".")[0] for m in tar}
    assert table[row]["key"] not in keys and len(keys) == len(table) - 1
    stats = json.loads((out / "shards" / shard.replace(".parquet", "_stats.json")).read_text())
    assert stats["successes"] == len(table) - 1 and stats["status_dict"]["removed"] == 1
    sizes = json.loads((out / "shards" / "sizes.json").read_text())
    assert sizes[shard.replace(".parquet", ".tar")] == len(table) - 1
    assert not (out / "work" / "remove").exists()


def test_a_page_url_takes_its_rows_and_keeps_an_image_another_page_still_has(built, tmp_path):
    out, server, _, _ = built
    before = _rows(out)
    p2 = url(server, "other.test/p2.html")
    assert main(_argv(out, "urls", _request(tmp_path, "pages.txt", [p2]))) == 0
    assert _kept(out) == {"a cat on a mat": "kept", "a cat in a box": "kept"}
    # a.png under p2's caption was a duplicate of p1's row: the image stays for p1's
    assert _rows(out)["a cat on a mat"] == before["a cat on a mat"]
    con = manifests.open(out)
    assert con.execute("SELECT status FROM pages WHERE url = ?", [p2]).fetchone() == ("removed",)
    removed = con.execute("SELECT uid, image_removed FROM removals").fetchall()
    assert len(removed) == 3 and sum(r[1] for r in removed) == 2  # c.png and d.png


def test_a_domain_takes_its_subdomains_and_nothing_that_only_ends_alike(built, tmp_path):
    out, _, _, _ = built
    asked = _request(tmp_path, "domains.txt", ["*.Site.Test", "ite.test"])
    assert main(_argv(out, "domains", asked)) == 0
    # p1 (site.test) goes, and a.png (cdn.site.test) with p2's caption of it; c and d stay
    assert _kept(out) == {"a cat in the sun": "kept", "a cat and a dog": "kept"}
    con = manifests.open(out)
    unmatched = con.execute("SELECT value FROM removals WHERE uid IS NULL").fetchall()
    assert unmatched == [("ite.test",)]


def test_a_uid_takes_that_caption_row_only(built, tmp_path):
    out, _, _, _ = built
    before = _rows(out)
    uid = before["the same cat on a mat"][4]  # p2's caption of a.png, kept beside p1's
    shard, shard_row = before["the same cat on a mat"][2:4]
    assert before["a cat on a mat"][2:4] == (shard, shard_row)  # one image, two captions
    stored = pq.read_table(out / "shards" / shard).to_pylist()[shard_row]
    assert sorted(stored["captions"]) == ["a cat on a mat", "the same cat on a mat"]
    assert main(_argv(out, "uids", _request(tmp_path, "uids.txt", [uid.upper()]))) == 0
    after = _rows(out)
    assert after["a cat on a mat"] == before["a cat on a mat"]  # a.png stays: a caption is left
    assert "the same cat on a mat" not in after
    con = manifests.open(out)
    assert con.execute("SELECT image_removed FROM removals").fetchall() == [(False,)]
    stored = pq.read_table(out / "shards" / shard).to_pylist()[shard_row]
    assert stored["caption"] == "a cat on a mat" and "a cat on a mat" in stored["captions"]
    assert None in stored["captions"]  # in place: the other caption keeps its caption_index
    assert content_hits(out, {"caption": b"the same cat on a mat"}) == []  # tars, work/ too


@pytest.mark.parametrize(
    "lines, message",
    [
        (
            ["http://ok.test/a.png", "ftp://x.test/y"],
            "urls.txt:2: 'ftp://x.test/y' is not an http(s) URL",
        ),
        (["# only a comment", ""], "names nothing to remove"),
    ],
)
def test_a_bad_request_changes_nothing_and_says_which_line(built, tmp_path, capsys, lines, message):
    out, _, _, _ = built
    before = (out / "dataset.json").read_text()
    assert main(_argv(out, "urls", _request(tmp_path, "urls.txt", lines))) == 2
    assert message in capsys.readouterr().err
    assert (out / "dataset.json").read_text() == before


def test_bad_uids_domains_and_missing_options_are_refused(built, tmp_path, capsys):
    out, _, _, _ = built
    assert main(_argv(out, "uids", _request(tmp_path, "u.txt", ["12345"]))) == 2
    assert "u.txt:1: '12345' is not a uid (32 hex digits)" in capsys.readouterr().err
    assert main(_argv(out, "domains", _request(tmp_path, "d.txt", ["a..b"]))) == 2
    assert "is not a domain name" in capsys.readouterr().err
    assert main(["remove", str(out), "--uids", str(tmp_path / "u.txt")]) == 2
    assert "required: --requested-by, --reason" in capsys.readouterr().err
    assert main(_argv(tmp_path / "nothing", "uids", str(tmp_path / "u.txt"))) == 2


def _state(out) -> tuple:
    con = manifests.open(out)
    audit = con.execute("SELECT * EXCLUDE (requested_at) FROM removals ORDER BY value").fetchall()
    return _rows(out), audit, con.execute("SELECT * FROM shards ORDER BY shard").fetchall()


def _puts(monkeypatch, argv) -> int:
    from manifests import storage

    count, put = [0], storage.Location.write_bytes

    def counted(self, *args):
        count[0] += 1
        return put(self, *args)

    monkeypatch.setattr(storage.Location, "write_bytes", counted)
    assert main(argv) == 0
    return count[0]


def test_a_killed_removal_is_finished_by_running_it_again(built, tmp_path, monkeypatch):
    out, server, _, _ = built
    asked = _request(tmp_path, "urls.txt", [url(server, "other.test/p2.html")])
    argv = _argv(out, "urls", asked, "--request-id", "r1")
    reference = tmp_path / "reference"
    shutil.copytree(out, reference)
    puts = _puts(monkeypatch, [argv[0], str(reference), *argv[2:]])
    monkeypatch.undo()
    expected = _state(reference)
    needles = _needles(out, ["a cat in the sun", "a cat and a dog"])
    for kill in sorted({1, 2, puts // 3, puts // 2, puts - 2, puts - 1}):
        copy = tmp_path / f"killed-{kill}"
        shutil.copytree(out, copy)
        child = subprocess.run(
            killed_after(f"put:{kill}", [argv[0], str(copy), *argv[2:]]), capture_output=True
        )
        assert child.returncode == KILLED, child.stderr.decode()[-2000:]
        other = _request(tmp_path, "other.txt", [url(server, "site.test/img/b.png")])
        if (copy / "work" / "remove" / "plan.json").exists() and kill < puts - 2:
            assert main(_argv(copy, "urls", other)) == 2  # another request waits for this one
        assert main([argv[0], str(copy), *argv[2:]]) == 0
        assert _state(copy) == expected, kill
        assert content_hits(copy, needles) == [], kill
        assert not (copy / "work" / "remove").exists()


def test_a_rerun_of_the_build_and_a_recheck_keep_the_removal(built, tmp_path):
    out, server, config, resolver = built
    b_url = url(server, "site.test/img/b.png")
    assert main(_argv(out, "urls", _request(tmp_path, "urls.txt", [b_url]))) == 0
    removed = _state(out)
    run_build(config, resolver=resolver)
    assert manifests.open(out).execute("SELECT max(1) FROM removals").fetchone() == (1,)
    assert _state(out) == removed
    summary = recheck(out, resolver=resolver)
    kept = sum(1 for status in _kept(out).values() if status == "kept")
    assert (summary["rechecked"], summary["opted_out"]) == (kept, 0)
    assert _state(out)[0] == removed[0]


def test_the_report_is_written_again_without_the_removed_images(built, tmp_path):
    import re

    out, server, _, _ = built
    assert main(["report", str(out)]) == 0
    thumbs = set(
        re.findall(r"data:image/jpeg;base64,[A-Za-z0-9+/=]+", (out / "report.html").read_text())
    )
    assert "a cat in a box" in (out / "report.html").read_text()
    assert (
        main(
            _argv(out, "urls", _request(tmp_path, "urls.txt", [url(server, "site.test/img/b.png")]))
        )
        == 0
    )
    html = (out / "report.html").read_text()
    left = set(re.findall(r"data:image/jpeg;base64,[A-Za-z0-9+/=]+", html))
    assert "a cat in a box" not in html and left < thumbs


def test_a_removal_on_s3_takes_the_content_out_of_the_bucket(built, tmp_path, s3):
    from manifests.storage import location, upload_tree

    out, server, _, _ = built
    needles = _needles(out, ["a cat in a box"])
    remote = f"{s3}/ds"
    upload_tree(out, remote)
    b_url = url(server, "site.test/img/b.png")
    assert main(_argv(remote, "urls", _request(tmp_path, "urls.txt", [b_url]))) == 0
    assert main(_argv(out, "urls", _request(tmp_path, "urls.txt", [b_url]))) == 0
    assert _state(remote)[0] == _state(out)[0]  # the same rows as the same removal on disk
    back = tmp_path / "back"
    for path in location(remote).rglob("*"):
        if path.is_file():
            target = back / path.relative_to(location(remote)).as_posix()
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    assert content_hits(back, needles) == []
    assert not location(remote + "/work/remove").exists()


def test_an_image_a_recheck_opted_out_leaves_the_shard_when_removed(built, tmp_path):
    """A recheck leaves an opted-out image's bytes in its shard (the manifest excludes it);
    its removal takes them out, found through the version that still had its shard row."""
    out, server, _, resolver = built
    needles = _needles(out, ["a cat in the sun"])
    c_path = "/img/c.png"
    status, headers, body = server.routes[c_path]
    server.routes[c_path] = (status, {**headers, "X-Robots-Tag": "noai"}, body)
    try:
        assert recheck(out, resolver=resolver)["opted_out"] == 1
    finally:
        server.routes[c_path] = (status, headers, body)
    assert _rows(out)["a cat in the sun"][0] == "opted_out"
    assert content_hits(out, needles)  # its bytes are still in the shard
    c_url = url(server, "other.test/img/c.png")
    assert main(_argv(out, "urls", _request(tmp_path, "urls.txt", [c_url]))) == 0
    assert content_hits(out, needles) == []
    audit = manifests.open(out).execute("SELECT status_before, image_removed FROM removals")
    assert audit.fetchall() == [("opted_out", True)]


def test_a_removal_killed_before_a_rerun_of_the_build_plans_again(built, tmp_path):
    out, server, config, resolver = built
    argv = _argv(out, "urls", _request(tmp_path, "urls.txt", [url(server, "site.test/img/b.png")]))
    child = subprocess.run(killed_after("put:1", argv), capture_output=True)
    assert child.returncode == KILLED and (out / "work" / "remove" / "plan.json").exists()
    run_build(config, resolver=resolver)  # a new version: the plan was made on the one before
    assert main(argv) == 0
    rows = _rows(out)
    assert "a cat in a box" not in rows and sum(isinstance(k, tuple) for k in rows) == 1
    assert len(manifests.open(out).execute("SELECT * FROM removals").fetchall()) == 1
    assert len(list((out / "manifests" / "removals").glob("*.parquet"))) == 1
