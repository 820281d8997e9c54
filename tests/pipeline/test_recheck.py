"""`pipeline recheck`: a site that opts out between the build and the recheck."""

import json

import pytest

import manifests
from pipeline.build import run_build
from pipeline.buildconfig import BuildConfig
from pipeline.cli import main
from pipeline.loopback import LoopbackServer
from pipeline.testing.site import picture

pytestmark = pytest.mark.timeout(180)

PNG = {"Content-Type": "image/png"}
NAMES = ("a", "b", "c", "d")


def _site() -> dict:
    routes = {"/robots.txt": (200, {"Content-Type": "text/plain"}, b"User-agent: *\nAllow: /\n")}
    for name in NAMES:
        routes[f"/img/{name}.png"] = (200, PNG, picture(f"recheck-{name}", size=64))
    return routes


@pytest.fixture
def built(tmp_path):
    with LoopbackServer(routes=_site()) as server:
        urls = tmp_path / "urls.csv"
        rows = [f"{server.url(f'/img/{n}.png')},a photo of a cat {n}" for n in NAMES]
        urls.write_text("url,caption\n" + "\n".join(rows) + "\n")
        (tmp_path / "queries.txt").write_text("cat\n")
        config = BuildConfig.of(
            out=str(tmp_path / "ds"),
            url_list=str(urls),
            query_list=str(tmp_path / "queries.txt"),
            allow_network=["127.0.0.1/32"],
            timeout=5.0,
            max_retries=0,
            executor="local",
            min_size=16,
            image_size=32,
        )
        run_build(config)
        server.config = config  # for a rerun of the build
        yield server, config.out


def _opt_out_since(server) -> None:
    """After the build: a TDM reservation on a.png, noml on b.png, c.png gone, d.png as it was."""
    server.routes["/.well-known/tdmrep.json"] = (
        200,
        {},
        json.dumps([{"location": "/img/a.png", "tdm-reservation": 1}]).encode(),
    )
    status, headers, body = server.routes["/img/b.png"]
    server.routes["/img/b.png"] = (status, {**headers, "X-Robots-Tag": "noml"}, body)
    del server.routes["/img/c.png"]


def _statuses(out, version=None) -> dict:
    con = manifests.open(out, version=version)
    rows = con.execute("SELECT url, status, error, shard FROM samples").fetchall()
    return {u.rsplit("/", 1)[1]: (s, e, shard) for u, s, e, shard in rows}


def test_rows_opted_out_since_the_build_leave_the_new_version_only(built, capsys):
    server, out = built
    before = _statuses(out)
    assert {k: v[0] for k, v in before.items()} == dict.fromkeys(
        ("a.png", "b.png", "c.png", "d.png"), "kept"
    )
    _opt_out_since(server)
    assert main(["recheck", out]) == 0
    printed = capsys.readouterr().out
    assert "2 opted out since" in printed and "1 unreachable" in printed
    after = _statuses(out)
    assert after["a.png"][0] == after["b.png"][0] == "opted_out"
    assert after["a.png"][1].startswith("opted out on recheck 20")
    assert "tdmrep.json" in after["a.png"][1] and "x-robots-tag (noml)" in after["b.png"][1]
    assert after["a.png"][2] is None and after["b.png"][2] is None  # no reader reaches them
    assert after["c.png"] == before["c.png"] and after["d.png"] == before["d.png"]
    assert _statuses(out, version=1) == before  # the version before stays readable
    con = manifests.open(out)
    assert con.execute("SELECT count(*) FROM samples WHERE status = 'kept'").fetchone() == (2,)
    files = con.execute("SELECT file, count(*) FROM origins GROUP BY 1 ORDER BY 1").fetchall()
    assert files == [("ai.txt", 2), ("robots.txt", 2), ("tdmrep.json", 2)]  # build + recheck
    assert main(["query", out, "SELECT count(*) FROM samples", "--version", "9"]) == 2


def test_the_trainer_selection_follows_the_new_version(built):
    from trainer.data.select import resolve

    server, out = built
    assert resolve(out).num_rows == 4
    _opt_out_since(server)
    assert main(["recheck", out]) == 0
    assert resolve(out).num_rows == 2


def test_older_than_rechecks_only_rows_checked_before_and_a_killed_recheck_resumes(
    built, monkeypatch
):
    import pipeline.recheck as recheck

    server, out = built
    _opt_out_since(server)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # killed between the origins step and the images

    monkeypatch.setattr(recheck, "_check_urls", killed)
    with pytest.raises(KeyboardInterrupt):
        recheck.recheck(out)
    monkeypatch.undo()
    asked = len(server.hits)
    summary = recheck.recheck(out)
    files = [h for h in server.hits[asked:] if not h.startswith("/img/")]
    assert files == []  # the per-origin files of the killed run were kept
    assert (summary["rechecked"], summary["opted_out"]) == (4, 2)
    again = recheck.recheck(out, older_than_days=1)  # every row was just checked
    assert (again["rechecked"], again["version"]) == (0, summary["version"])  # nothing to commit


def test_a_rerun_of_the_build_keeps_what_the_recheck_found(built):
    server, out = built
    _opt_out_since(server)
    assert main(["recheck", out]) == 0
    rechecked = _statuses(out)
    run_build(server.config)  # every stage done: it commits its files, through the recheck's
    assert _statuses(out) == rechecked
    assert len(manifests.open(out).execute("SELECT * FROM origins").fetchall()) == 6


def test_an_origin_that_does_not_answer_now_opts_nothing_out(built, capsys):
    server, out = built
    server.routes["/robots.txt"] = (503, {}, b"busy")  # an outage on the day of the recheck
    assert main(["recheck", out, "--max-retries", "0"]) == 0
    assert "0 opted out since, 4 unreachable" in capsys.readouterr().out
    assert {v[0] for v in _statuses(out).values()} == {"kept"}


def test_a_recheck_killed_after_its_commit_only_cleans_up(built, monkeypatch):
    import pipeline.recheck as recheck

    server, out = built
    _opt_out_since(server)
    monkeypatch.setattr(recheck, "_finish", lambda layout, work: None)  # killed right after
    recheck.recheck(out)
    monkeypatch.undo()
    asked = len(server.hits)
    summary = recheck.recheck(out)
    assert len(server.hits) == asked  # nothing asked again, nothing committed twice
    assert summary["opted_out"] == 2 and summary["version"] == 2
