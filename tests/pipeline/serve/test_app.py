"""`pipeline serve` over HTTP (FastAPI's test client): filters against the manifest's own SQL,
paging, the token, signed thumbnails, bad requests, a takedown while serving, S3."""

import html
import re
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest
from fastapi.testclient import TestClient

import manifests
from pipeline.cli import main
from pipeline.serve import data, views
from pipeline.serve.app import COOKIE, create_app
from pipeline.serve.run import check_binding
from tests.pipeline.serve.conftest import free_port

TOKEN = "a-long-enough-test-token"


@pytest.fixture(scope="module")
def client(hostile):
    return TestClient(create_app(hostile))


def uids_on(page_html: str) -> list[str]:
    return re.findall(r'data-uid="([0-9a-f]{32})"', page_html)


def images_on(page_html: str) -> list[str]:
    return [html.unescape(s) for s in re.findall(r'<img src="([^"]+)"', page_html)]


def sql_uids(root, where: str, args=()) -> list[str]:
    con = manifests.open(root)
    return [
        r[0] for r in con.execute(f"SELECT uid FROM samples WHERE {where}", list(args)).fetchall()
    ]


def test_each_filter_shows_exactly_the_rows_its_sql_selects(client, hostile):
    con = manifests.open(hostile)
    dup, owl = con.execute("SELECT uid, dup_of FROM samples WHERE status = 'duplicate'").fetchone()
    cases = {
        "": "TRUE",
        "status=kept": "status = 'kept'",
        "status=dropped": "status NOT IN ('kept', 'pending')",
        "status=too_small": "status = 'too_small'",
        "query=fish": "list_contains(matched_queries, 'fish')",
        "query=fish&status=kept": "list_contains(matched_queries, 'fish') AND status = 'kept'",
        "lang=en": "lang = 'en'",
        "leak_of=any": "leak_of IS NOT NULL",
        "leak_of=pets%2Fcat%2Fcat.png": "leak_of = 'pets/cat/cat.png'",
        f"cluster={dup}": f"uid = '{owl}' OR dup_of = '{owl}'",
        f"cluster={owl}": f"uid = '{owl}' OR dup_of = '{owl}'",
        "text=FISH": "caption ILIKE '%fish%'",
    }
    for query, where in cases.items():
        page = client.get(f"/grid?{query}")
        assert page.status_code == 200, query
        want = sql_uids(hostile, where)
        assert sorted(uids_on(page.text)) == sorted(want), query
        assert f"{len(want):,} rows match" in page.text, query
    assert len(sql_uids(hostile, f"uid = '{owl}' OR dup_of = '{owl}'")) == 2


def test_pages_cover_every_row_once(client, hostile, monkeypatch):
    monkeypatch.setattr(views, "PAGE_SIZE", 5)
    seen, page = [], 1
    while True:
        text = client.get(f"/grid?page={page}").text
        seen += uids_on(text)
        if 'rel="next"' not in text:
            break
        assert f'href="/grid?page={page + 1}"' in text
        page += 1
    everything = sql_uids(hostile, "TRUE")
    assert sorted(seen) == sorted(everything) and len(seen) == len(set(seen))
    assert page == -(-len(everything) // 5)
    assert uids_on(client.get("/grid?page=999").text) == []  # past the end: an empty page


def test_bad_requests_say_what_is_allowed(client):
    for query, words in {
        "status=bogus": "status must be one of",
        "page=0": "page must be a whole number",
        "page=abc": "page must be a whole number",
        "clip_min=nan": "clip_min must be a finite number",
        "clip_max=high": "clip_max must be a number",
        "cluster=../../etc": "cluster must be a row's uid",
    }.items():
        page = client.get(f"/grid?{query}")
        assert page.status_code == 400 and words in html.unescape(page.text), query
    assert client.get("/row/not-a-uid").status_code == 400
    assert client.get("/row/" + "0" * 32).status_code == 404
    assert client.get("/search?k=0").status_code == 400
    assert client.get("/no/such/page").status_code == 404
    assert client.get("/docs").status_code == 404 and client.get("/openapi.json").status_code == 404


def test_thumbnails_are_signed_and_name_no_path(client, hostile):
    page = client.get("/grid").text
    sources = images_on(page)
    assert len(sources) >= 11  # kept rows (shards), the leaks and the duplicate (work/images)
    for source in sources:
        reply = client.get(source)
        assert reply.status_code == 200 and reply.headers["content-type"] == "image/jpeg"
        assert reply.content[:2] == b"\xff\xd8"
    forged = re.sub(r"sig=[0-9a-f]+", "sig=" + "0" * 32, sources[0])
    assert client.get(forged).status_code == 404
    other_row = re.sub(r"row=\d+", "row=1", sources[0])
    assert client.get(other_row).status_code == 404  # the signature covers every field
    for name in ("../run.json", "/etc/passwd", "..%2F..%2Frun.json"):
        assert client.get(f"/thumb?src=shard&name={name}&row=0&uid=x&sig=0").status_code == 404
    # rows that never show an image: none of their URLs is signed
    statuses = dict(manifests.open(hostile).execute("SELECT uid, status FROM samples").fetchall())
    shown = {re.search(r"uid=([0-9a-f]{32})", s).group(1) for s in sources}
    assert not {u for u in shown if statuses[u] in ("opted_out", "removed")}


def test_the_token_guards_every_request(hostile):
    client = TestClient(create_app(hostile, token=TOKEN))
    assert client.get("/").status_code == 401
    assert client.get("/thumb?src=shard").status_code == 401
    assert client.get("/?token=wrong-token-of-some-length").status_code == 401
    first = client.get(f"/grid?status=kept&token={TOKEN}", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/grid?status=kept"
    assert COOKIE in first.cookies
    assert client.get("/grid?status=kept").status_code == 200  # the cookie from now on
    fresh = TestClient(create_app(hostile, token=TOKEN))
    assert fresh.get("/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_binding_off_loopback_needs_a_token(monkeypatch):
    monkeypatch.delenv("PIPELINE_SERVE_TOKEN", raising=False)
    assert check_binding("127.0.0.1", 8080, None) is None
    assert check_binding("::1", 8080, None) is None
    with pytest.raises(data.ConfigError, match="not a loopback address"):
        check_binding("0.0.0.0", 8080, None)
    with pytest.raises(data.ConfigError, match="at least 16 characters"):
        check_binding("0.0.0.0", 8080, "short")
    assert check_binding("0.0.0.0", 8080, TOKEN) == TOKEN
    monkeypatch.setenv("PIPELINE_SERVE_TOKEN", TOKEN)
    assert check_binding("10.1.2.3", 8080, None) == TOKEN


def test_cli_errors_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PIPELINE_SERVE_TOKEN", raising=False)
    assert main(["serve", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "give --token" in err and "Traceback" not in err


@pytest.mark.timeout(120)
def test_the_command_serves_until_stopped(hostile):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "serve", str(hostile), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline, body = time.monotonic() + 60, None
        while body is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as reply:
                    body = reply.read().decode()
            except OSError:
                time.sleep(0.3)
        assert body is not None, proc.stdout.read() if proc.poll() is not None else "no answer"
        assert "candidate rows" in body
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.timeout(240)
def test_a_takedown_while_serving_stops_showing_the_row(hostile, tmp_path, monkeypatch):
    monkeypatch.setattr(data, "RECHECK_S", 0.0)
    root = tmp_path / "ds"
    shutil.copytree(hostile, root)
    client = TestClient(create_app(root))
    fish = sql_uids(root, "status = 'kept' AND caption = 'a gold fish'")[0]
    before = client.get(f"/row/{fish}").text
    [source] = images_on(before)[:1]
    assert client.get(source).status_code == 200
    (tmp_path / "uids.txt").write_text(fish + "\n")
    argv = ["remove", str(root), "--uids", str(tmp_path / "uids.txt")]
    assert main([*argv, "--requested-by", "the owner", "--reason", "asked"]) == 0
    assert client.get(source).status_code == 404  # signed for the version before
    after = client.get(f"/row/{fish}").text
    assert "removed" in after and images_on(after) == []
    assert fish not in uids_on(client.get("/grid?status=kept").text)
    assert "a gold fish" not in client.get("/grid").text


@pytest.mark.timeout(240)
def test_a_dataset_on_s3_serves_as_on_local_disk(hostile, s3):
    from manifests.storage import upload_tree

    upload_tree(hostile, f"{s3}/ds")
    local, remote = TestClient(create_app(hostile)), TestClient(create_app(f"{s3}/ds"))
    for query in ("/grid", "/grid?status=dropped", "/grid?leak_of=any"):
        assert uids_on(remote.get(query).text) == uids_on(local.get(query).text)
    leak = uids_on(remote.get("/grid?leak_of=any").text)[0]
    page = remote.get(f"/row/{leak}").text
    sources = images_on(page)
    assert len(sources) == 2  # the pool image and the eval image it copies
    assert all(remote.get(s).content[:2] == b"\xff\xd8" for s in sources)
