"""A build over a web that says "not for AI training" in every way: the manifests say who said
what, and the drops say which signal removed a row."""

import pytest

import manifests
from pipeline.build import run_build
from pipeline.buildconfig import BuildConfig
from pipeline.report.page import render
from pipeline.testing.consentsite import (
    ALLOWED_POLICY,
    BUILD_EXPECTED,
    OPTED_OUT_PAGES,
    ConsentWeb,
    write_warc,
)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("consent")
    with ConsentWeb() as web:
        urls = web.image_urls()
        write_warc(tmp / "pages.warc.gz", web)  # pages the build reads, not fetches
        (tmp / "queries.txt").write_text("cat\n")
        config = BuildConfig.of(
            out=str(tmp / "ds"),
            warc=[str(tmp / "pages.warc.gz")],
            query_list=str(tmp / "queries.txt"),
            allow_network=["127.0.0.1/32"],
            timeout=5.0,
            max_retries=0,
            executor="local",
            min_size=16,
            image_size=32,
            opt_out_token=["nofoundationmodels"],
            allow_tdm_policy=[ALLOWED_POLICY],
        )
        run_build(config)
        yield manifests.open(config.out), urls, config


def test_each_image_ends_as_its_site_asked_with_the_signal_named(built):
    con, urls, _ = built
    rows = con.execute("SELECT url, status, error FROM samples").fetchall()
    assert {urls[u]: s for u, s, _ in rows} == BUILD_EXPECTED
    errors = {urls[u]: e for u, s, e in rows if s == "opted_out"}
    page = errors[("page-reserved", "/img/covered.png")]
    assert page.startswith("page opted out by tdmrep.json") and "/articles/" in page
    assert errors[("tdmrep", "/img/covered.png")].startswith("opted out by tdmrep.json")
    assert "x-robots-tag (noml)" in errors[("headers", "/img/covered.png")]
    assert errors[("ai-txt", "/img/covered.png")].startswith("opted out by ai.txt")


def test_one_query_answers_who_said_what(built):
    con, urls, _ = built
    kept_from_tdmrep_origins = con.execute(
        """SELECT count(DISTINCT uid) FROM consent
           WHERE signal = 'tdmrep.json' AND state = 'found' AND status = 'kept'"""
    ).fetchone()[0]
    tdm_sites = {
        "tdmrep",
        "tdmrep-allowed-policy",
        "conflicting",
        "malformed-files",
        "invalid-json",
        "page-reserved",
    }
    expected = sum(1 for (s, _), v in BUILD_EXPECTED.items() if s in tdm_sites and v == "kept")
    assert kept_from_tdmrep_origins == expected
    noml = con.execute(
        """SELECT url FROM consent WHERE subject = 'image' AND signal = 'x-robots-tag'
           AND value ILIKE '%noml%'"""
    ).fetchall()
    assert [urls[u] for (u,) in noml] == [("headers", "/img/covered.png")]
    files = con.execute("SELECT DISTINCT file FROM origins ORDER BY 1").fetchall()
    assert files == [("ai.txt",), ("robots.txt",), ("tdmrep.json",)]
    pages = con.execute(
        """SELECT count(DISTINCT uid), count(*) FILTER (opt_out) FROM consent
           WHERE subject = 'page' AND signal = 'tdmrep.json'"""
    ).fetchone()
    # every row's page checked; refused: the reserved page's row and the two rows whose page is
    # on the origin whose tdmrep.json is unavailable
    assert pages == (len(urls), 3)


def test_archived_pages_that_opt_out_give_no_rows_and_say_why(built):
    con, _, _ = built
    pages = con.execute(
        "SELECT url, status, error FROM pages WHERE status = 'opted_out' ORDER BY url"
    ).fetchall()
    said = {url.rsplit("/", 1)[1]: error for url, _, error in pages}
    assert set(said) == {p.lstrip("/") for p in OPTED_OUT_PAGES}
    assert said["noml.html"] == "opted out by x-robots-tag (noml)"
    assert said["tdm-meta.html"].startswith("opted out by meta tdm-reservation")
    assert said["usage-header.html"] == "opted out by content-usage (train-genai=n)"
    never = con.execute("SELECT count(*) FROM samples WHERE url LIKE '%never.png'").fetchone()
    assert never == (0,)


def test_the_report_has_a_consent_section(built):
    _, _, config = built
    html = render(config.out)
    assert 'id="consent"' in html and "tdmrep.json" in html and "unavailable" in html
