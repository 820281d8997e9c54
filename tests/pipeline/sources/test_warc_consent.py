"""An archived page's consent: the build's own tokens and policies, the archive's dates."""

import pytest

from pipeline.net.consent import ConsentPolicy
from pipeline.sources.warc import _warc_time, read_warc_file
from pipeline.sources.warc_recorder import WarcRecorder

pytestmark = pytest.mark.timeout(60)

HTML = {"Content-Type": "text/html"}


def _page(head: str) -> bytes:
    return f'<html><head>{head}</head><body><img src="/a.png" alt="a cat"></body></html>'.encode()


def test_an_archived_page_is_judged_by_the_builds_tokens_and_policies(tmp_path):
    path = tmp_path / "pages.warc.gz"
    with WarcRecorder(path, mode="w") as recorder:
        recorder.write_response(
            "http://a.test/x.html", 200, HTML, _page("<meta name=robots content=nogenai>")
        )
        reserved = "<meta name='tdm-reservation' content='1'><meta name='tdm-policy' content='https://p.test/ok'>"
        recorder.write_response("http://a.test/y.html", 200, HTML, _page(reserved))
    default = read_warc_file(path)
    assert [p.status for p in default.pages] == ["ok", "opted_out"]
    policy = ConsentPolicy(
        "clipengine-bot", frozenset({"noai", "nogenai"}), frozenset({"https://p.test/ok"})
    )
    mine = read_warc_file(path, policy)
    assert [p.status for p in mine.pages] == ["opted_out", "ok"]
    assert mine.pages[0].error == "opted out by meta robots (nogenai)"


@pytest.mark.parametrize(
    "value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "yesterday", ""]
)
def test_a_warc_date_no_crawl_could_have_is_no_time(value):
    assert _warc_time(value) is None


def test_a_warc_date_without_a_zone_is_utc():
    assert _warc_time("2026-11-30T12:00:00") == _warc_time("2026-11-30T12:00:00Z") == 1796040000.0
