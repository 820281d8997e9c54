"""`pipeline build` from URL lists and WARC files, locally and as Ray tasks."""

import json

import pytest

import manifests
from manifests.config import ConfigError
from pipeline.build import run_build
from pipeline.buildconfig import BuildConfig
from pipeline.testing.site import expected_pairs


def _queries(tmp_path):
    path = tmp_path / "queries.txt"
    path.write_text("cat\ndog\nbird\nfish\nowl\n", encoding="utf-8")
    return str(path)


def test_url_list_build_keeps_every_row_with_a_status(tmp_path):
    rows = [
        {"url": "http://img.test/1.jpg", "caption": "a black cat"},
        {"url": "http://img.test/2.jpg", "caption": "a tree"},
        {"url": "http://img.test/1.jpg", "caption": "a black cat"},  # repeated pair: one row
        {"url": "http://img.test/3.jpg", "caption": "two dogs and a cat"},
        {"url": "", "caption": "no url"},
    ]
    src = tmp_path / "list.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    config = BuildConfig.of(
        out=str(tmp_path / "ds"),
        query_list=_queries(tmp_path),
        url_list=str(src),
        rows_per_part=2,
        executor="local",
        fetch=False,
    )
    run_build(config)
    con = manifests.open(config.out)
    got = con.execute("SELECT url, status, matched_queries FROM samples ORDER BY url").fetchall()
    assert got == [
        ("http://img.test/1.jpg", "pending", ["cat"]),
        ("http://img.test/2.jpg", "no_query_match", []),
        ("http://img.test/3.jpg", "pending", ["cat"]),  # word-bounded: 'dog' is not in 'dogs'
    ]
    stats = dict(con.execute("SELECT stage, drops FROM stats").fetchall())
    assert json.loads(stats["sources"]) == {"empty_url": 1}
    assert json.loads(stats["balance"]) == {"no_query_match": 1, "repeated_pair": 1}


def test_rerun_with_other_settings_is_refused(tmp_path):
    src = tmp_path / "list.txt"
    src.write_text("http://img.test/1.jpg\n")
    run_build(BuildConfig.of(out=str(tmp_path / "ds"), url_list=str(src), executor="local"))
    with pytest.raises(ConfigError, match="per_query_cap"):
        run_build(
            BuildConfig.of(
                out=str(tmp_path / "ds"), url_list=str(src), per_query_cap=5, executor="local"
            )
        )


@pytest.mark.ray
@pytest.mark.timeout(240)
def test_warc_build_as_ray_tasks_matches_local(tmp_path, test_site):
    site, _ = test_site
    warc = tmp_path / "site.warc.gz"
    common = dict(query_list=_queries(tmp_path), allow_network=["127.0.0.1/32"], timeout=3.0)
    run_build(
        BuildConfig.of(
            out=str(tmp_path / "crawl"),
            seeds=[site.base],
            warc_out=str(warc),
            executor="local",
            **common,
        )
    )
    # Two WARC files (the same crawl twice): repeated pairs collapse to one row each.
    copy = tmp_path / "copy.warc.gz"
    copy.write_bytes(warc.read_bytes())
    local = BuildConfig.of(
        out=str(tmp_path / "local"), warc=[str(tmp_path / "*.warc.gz")], executor="local", **common
    )
    ray_cfg = BuildConfig.of(
        out=str(tmp_path / "ray"), warc=[str(tmp_path / "*.warc.gz")], executor="ray", **common
    )
    run_build(local)
    run_build(ray_cfg)
    query = "SELECT uid, url, caption, page_url, status FROM samples ORDER BY uid"
    got_local = manifests.open(local.out).execute(query).fetchall()
    assert got_local == manifests.open(ray_cfg.out).execute(query).fetchall()
    assert {(u, c, p) for _, u, c, p, _ in got_local} == expected_pairs(site.base)


def test_stages_run_one_at_a_time_give_the_same_manifests(tmp_path):
    from pipeline.build import wanted_stages

    src = tmp_path / "list.csv"
    src.write_text("url,caption\nhttp://img.test/1.jpg,a cat\nhttp://img.test/2.jpg,a dog\n")
    common = dict(query_list=_queries(tmp_path), url_list=str(src), executor="local", fetch=False)
    whole = BuildConfig.of(out=str(tmp_path / "whole"), **common)
    run_build(whole)
    staged = BuildConfig.of(out=str(tmp_path / "staged"), **common)
    with pytest.raises(ConfigError, match="sources stage has not finished"):
        run_build(staged, stages=["match"])
    names = [stage.name for stage in wanted_stages(staged)]
    assert names == ["sources", "match", "balance", "text", "publish"]  # --no-fetch
    for name in names:
        run_build(staged, stages=[name])
    query = "SELECT uid, status, matched_queries, lang FROM samples ORDER BY uid"
    assert manifests.open(staged.out).execute(query).fetchall() == (
        manifests.open(whole.out).execute(query).fetchall()
    )
    with pytest.raises(ConfigError, match="unknown stage"):
        run_build(staged, stages=["crawl"])


@pytest.mark.timeout(120)
def test_pipeline_crawl_records_a_warc_that_replays_to_the_same_pairs(tmp_path, test_site, capsys):
    from pipeline.cli import main

    site, _ = test_site
    warc = tmp_path / "site.warc.gz"
    argv = [
        "crawl",
        "--seeds",
        site.base,
        "--warc-out",
        str(warc),
        "--allow-network",
        "127.0.0.1/32",
        "--timeout",
        "3",
        "--max-depth",
        "1",
    ]
    assert main(argv) == 0
    assert "into " + str(warc) in capsys.readouterr().out
    replay = BuildConfig.of(
        out=str(tmp_path / "replay"),
        warc=[str(warc)],
        executor="local",
        query_list=_queries(tmp_path),
        fetch=False,
    )
    run_build(replay)
    pairs = manifests.open(replay.out).execute("SELECT url, caption, page_url FROM samples")
    assert set(pairs.fetchall()) == expected_pairs(site.base, max_depth=1)
    assert main(argv[:-2] + ["--max-depth", "x"]) == 2  # bad input: one line, status 2
    assert capsys.readouterr().err.startswith("pipeline crawl: error:")
