"""`pipeline build` from seeds, and its WARC replay, on the loopback test site."""

import subprocess
import sys

import pyarrow.parquet as pq
import pytest

import manifests
from pipeline.build import run_build
from pipeline.buildconfig import BuildConfig
from pipeline.testing.compare import undated
from pipeline.testing.crash import KILLED, killed_after
from pipeline.testing.site import expected_pairs

QUERIES = ["cat", "dog", "bird", "fish", "owl", "café", "horse"]


def _config(tmp_path, site, **overrides) -> BuildConfig:
    queries = tmp_path / "queries.txt"
    queries.write_text("\n".join(QUERIES) + "\n", encoding="utf-8")
    values = dict(
        out=str(tmp_path / "ds"),
        query_list=str(queries),
        seeds=[site.base],
        allow_network=["127.0.0.1/32"],
        timeout=3.0,  # the slow page takes 6 s
        executor="local",
    )
    values.update(overrides)
    return BuildConfig.of(**values)


def _pairs(root) -> set[tuple]:
    con = manifests.open(root)
    return set(con.execute("SELECT url, caption, page_url FROM samples").fetchall())


def _page_status(root) -> dict[str, str]:
    con = manifests.open(root)
    return dict(con.execute("SELECT url, status FROM pages").fetchall())


@pytest.mark.timeout(120)
def test_crawl_finds_every_allowed_pair_and_nothing_else(tmp_path, test_site):
    site, external = test_site
    config = _config(tmp_path, site, warc_out=str(tmp_path / "crawl.warc.gz"))
    run_build(config)

    assert _pairs(config.out) == expected_pairs(site.base, max_depth=3)
    # No request to a robots-disallowed path, nor to the refused address.
    assert not [h for h in site.hits if h.startswith("/private/")]
    assert external.hits == []
    assert "/deep/level4.html" not in site.hits  # beyond --max-depth 3
    status = _page_status(config.out)
    base = site.base
    assert status[f"{base}private/secret.html"] == "robots_disallowed"
    assert status[f"{base}optout-header.html"] == "opted_out"
    assert status[f"{base}optout-meta.html"] == "opted_out"
    assert status[f"{base}redirect-external"] == "blocked_address"
    for path in ("loop-a", "slow.html", "missing.html", "error.html"):
        assert status[f"{base}{path}"] == "fetch_failed", path
    assert status[f"{base}huge.html"] == "too_large"
    assert "http://other.test/elsewhere.html" not in status  # off-site links are not followed


@pytest.mark.timeout(120)
def test_warc_replay_gives_the_same_pairs(tmp_path, test_site):
    site, _ = test_site
    live = _config(tmp_path, site, warc_out=str(tmp_path / "crawl.warc.gz"))
    run_build(live)
    replay = _config(
        tmp_path, site, out=str(tmp_path / "replay"), seeds=[], warc=[live.source.warc_out]
    )
    run_build(replay)
    assert _pairs(replay.out) == _pairs(live.out)
    query = "SELECT uid, status, matched_queries FROM samples ORDER BY uid"
    assert manifests.open(replay.out).execute(query).fetchall() == (
        manifests.open(live.out).execute(query).fetchall()
    )


@pytest.mark.timeout(60)
def test_refused_addresses_are_never_contacted(tmp_path):
    """Fake DNS answers private and metadata addresses; the build refuses them unconnected."""
    from pipeline.net import StaticResolver

    resolver = StaticResolver(
        {
            "intranet.test": ["10.1.2.3"],
            "metadata.test": ["169.254.169.254"],
            "home.test": ["192.168.0.1"],
        }
    )
    config = BuildConfig.of(
        out=str(tmp_path / "ds"),
        seeds=["http://intranet.test/", "http://metadata.test/latest", "http://home.test/"],
        executor="local",
    )
    run_build(config, resolver=resolver)
    assert set(_page_status(config.out).values()) == {"blocked_address"}


@pytest.mark.timeout(120)
def test_balancing_caps_queries_and_is_seeded(tmp_path, test_site):
    site, _ = test_site
    # 'fish' has 4 pairs within depth 3 (gold fish, depth one/two/three): cap 1 keeps ~1.
    runs = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        config = _config(
            tmp_path, site, out=str(tmp_path / name), per_query_cap=1, seed=seed, fetch=False
        )
        run_build(config)
        con = manifests.open(config.out)
        runs[name] = con.execute("SELECT uid, status FROM samples ORDER BY uid").fetchall()
        counts = dict(con.execute("SELECT status, count(*) FROM samples GROUP BY 1").fetchall())
        assert counts.get("over_query_cap", 0) > 0
        # Pairs of a query matched no more often than the cap are always kept.
        under_cap = con.execute(
            """WITH counts AS (SELECT q, count(*) AS n FROM samples, unnest(matched_queries) t(q)
                               GROUP BY q)
               SELECT DISTINCT s.status FROM samples s, unnest(s.matched_queries) t(q)
               JOIN counts USING (q) WHERE counts.n <= 1"""
        ).fetchall()
        assert under_cap == [("pending",)]
    assert runs["a"] == runs["b"]


def _manifest_tables(root):
    layout = manifests.DatasetLayout(root)
    from manifests.commit import committed_files

    # Keyed by part: the file names carry a token of the attempt that wrote them.
    # Keyed by part; equal but for when each build checked the web (pipeline.testing.compare)
    return {
        p.name.split(".")[0]: undated(pq.read_table(p)) for p in committed_files(layout, "samples")
    }


@pytest.mark.timeout(180)
@pytest.mark.parametrize("crash_after", ["sources:2", "match:1", "balance:2"])
def test_killed_build_resumes_to_identical_manifests(tmp_path, test_site, crash_after):
    site, _ = test_site
    whole = _config(tmp_path, site, out=str(tmp_path / "whole"))
    run_build(whole)

    out = tmp_path / "killed"
    queries = tmp_path / "queries.txt"
    options = "--allow-network 127.0.0.1/32 --timeout 3 --executor local"
    argv = ["build", "--query-list", str(queries), "--seeds", site.base, "--out", str(out)]
    argv += options.split()
    killed = subprocess.run(
        killed_after(crash_after, argv), capture_output=True, text=True, timeout=120
    )
    assert killed.returncode == KILLED, killed.stderr  # killed mid-build
    hits_before = list(site.hits)
    resumed = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *argv], capture_output=True, text=True, timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr
    refetched = site.hits[len(hits_before) :]
    if crash_after == "sources:2":  # levels 0 and 1 were finished: not fetched again
        assert "/" not in refetched and "/gallery.html" not in refetched
    else:  # the crawl was finished: no page is fetched again (only the images stage runs)
        assert [h for h in refetched if h == "/" or h.endswith(".html")] == []
    assert _manifest_tables(out) == _manifest_tables(whole.out)
