"""`pipeline report`: one self-contained HTML file whose numbers are the dataset's own."""

import base64
import csv
import io
import json
import re
import shutil
from html import unescape
from html.parser import HTMLParser

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

import manifests
from manifests.db import NotADatasetError
from pipeline.build import run_build
from pipeline.buildconfig import BuildConfig
from pipeline.report import ReportConfig, render, write_report
from pipeline.testing.site import GOOD_IMAGES, start_site

EVIL = '<script>alert("x")</script> a "red" bird & <b>bold</b>'
EVIL_DROPPED = "a tiny cat \" onerror='alert(1)' <img src=x>"
QUERIES = ["cat", "dog", "bird", "fish", "owl", "horse", "chat"]


def _url_list(path, base: str) -> None:
    captions = [
        "a cat on a sofa",
        "a dog and a ball",
        EVIL,
        "a gold fish",
        "an owl at night",
        "a fish in a cafe",
        "a brown horse",
        "a moved owl",
        "a fish at depth one",
        "a fish two",
        "a fish three",
        "a fish four",
    ]
    rows = [(base + p[1:], c) for p, c in zip(GOOD_IMAGES, captions, strict=True)]
    rows += [
        (base + "img/copy-of-cat.png", "the same cat again"),  # cat.png's bytes: its 2nd caption
        (base + "img/copy-of-cat.png", "A cat on a  sofa"),  # and cat.png's caption: duplicate
        (base + "img/tiny.png", EVIL_DROPPED),  # too_small
        (base + "img/html.png", "a fake cat"),  # not_an_image
        (base + "private/cat.png", "a private cat"),  # robots_disallowed
        (base + "img/chat.webp", "un chat noir dort sur le canapé du salon"),  # language
        (base + "img/cat.png", "nothing to see here"),  # no_query_match
    ]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["url", "caption"])
        writer.writerows(rows)


def _build(tmp, name: str, base: str, **overrides):
    (tmp / "q.txt").write_text("\n".join(QUERIES) + "\n", encoding="utf-8")
    _url_list(tmp / "list.csv", base)
    values = dict(
        out=str(tmp / name),
        query_list=str(tmp / "q.txt"),
        url_list=str(tmp / "list.csv"),
        allow_network=["127.0.0.1/32"],
        timeout=3.0,
        executor="local",
        languages=["en"],
        min_size=16,
        image_size=64,
        shard_size=4,
        per_query_cap=6,
    )
    values.update(overrides)
    return run_build(BuildConfig.of(**values)).root


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """A full build and a text-only build of the same URL list on the loopback test site."""
    tmp = tmp_path_factory.mktemp("report")
    site, external = start_site()
    try:
        full = _build(tmp, "full", site.base)
        text_only = _build(tmp, "text", site.base, fetch=False)
    finally:
        site.close()
        external.close()
    return {"full": full, "text": text_only, "tmp": tmp}


@pytest.fixture(scope="module")
def full_report(datasets):
    path = write_report(datasets["full"])
    return path, path.read_text(encoding="utf-8")


def _section(html: str, anchor: str) -> str:
    start = html.index(f'<section id="{anchor}">')
    return html[start : html.index("</section>", start)]


def _table_rows(html: str, table_class: str) -> list[list[str]]:
    start = html.index(f'<table class="{table_class}">')
    body = html[start : html.index("</table>", start)]
    return [
        [unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td[^>]*>(.*?)</td>", tr)]
        for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", body.split("<tbody>", 1)[1])
    ]


class _Attributes(HTMLParser):
    def __init__(self, names):
        super().__init__()
        self.names, self.values = names, []

    def handle_starttag(self, tag, attrs):
        self.values += [v or "" for k, v in attrs if k in self.names]


def _attribute_values(html: str, names) -> list[str]:
    """Values of the named attributes on every tag, as a browser's parser sees them."""
    parser = _Attributes(names)
    parser.feed(html)
    parser.close()
    return parser.values


def _int(text: str) -> int:
    return int(text.replace(",", ""))


@pytest.mark.timeout(120)
def test_report_is_one_self_contained_file(datasets, full_report):
    path, html = full_report
    assert path == datasets["full"] / "report.html"
    refs = _attribute_values(html, ("src", "href", "srcset", "action", "poster", "data"))
    assert refs, "expected inline images and in-page links"
    assert all(r.startswith(("data:image/", "#")) for r in refs), [r[:40] for r in refs]
    lowered = html.lower()
    assert "<script" not in lowered and "<link" not in lowered and "@import" not in lowered
    assert not re.search(r"url\(\s*['\"]?https?:", lowered)
    # the test site's URLs are shown, as text only
    assert "http://127.0.0.1:" in html


@pytest.mark.timeout(120)
def test_funnel_and_statuses_equal_the_manifests(datasets, full_report):
    _, html = full_report
    con = manifests.open(datasets["full"])
    query = 'SELECT stage, rows_in, rows_out, unit, dropped FROM stats ORDER BY "order"'
    expected = con.execute(query).fetchall()
    assert [x[0] for x in expected] == [
        "sources",
        "match",
        "balance",
        "text",
        "robots",
        "fetch",
        "images",
        "dedup",
        "shards",
    ]
    units = {stage: unit for stage, _, _, unit, _ in expected}
    assert (units["robots"], units["fetch"], units["images"]) == ("origins", "urls", "rows")
    shown = [(r[0], _int(r[1]), _int(r[2]), r[3], _int(r[4])) for r in _table_rows(html, "funnel")]
    assert shown == expected
    statuses = dict(con.execute("SELECT status, count(*) FROM samples GROUP BY 1").fetchall())
    assert {
        "kept",
        "duplicate",
        "too_small",
        "not_an_image",
        "robots_disallowed",
        "language",
        "no_query_match",
    } <= set(statuses)
    assert {r[0]: _int(r[1]) for r in _table_rows(html, "statuses")} == statuses
    drops = {(r[0], r[1]): _int(r[2]) for r in _table_rows(html, "drops")}
    for stage, *_ in expected:
        record = json.loads((datasets["full"] / "stats" / f"{stage}.json").read_text())
        for reason, count in record["drops"].items():
            assert drops.pop((reason, stage)) == count
    assert drops == {}


@pytest.mark.timeout(120)
def test_untrusted_captions_are_escaped(full_report):
    _, html = full_report
    assert EVIL not in html and "<b>bold</b>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; a &quot;red&quot; bird &amp;" in html
    # the dropped caption's quote cannot end an attribute nor open a tag
    assert "onerror='" not in html and "<img src=x>" not in html
    assert "a tiny cat &quot; onerror=&#x27;alert(1)&#x27; &lt;img src=x&gt;" in html
    for attr in re.findall(r'\b(?:alt|title)="([^"]*)"', html):
        assert "<" not in attr and ">" not in attr


@pytest.mark.timeout(120)
def test_kept_grid_and_dropped_cards_show_real_images(datasets, full_report):
    _, html = full_report
    con = manifests.open(datasets["full"])
    kept = con.execute("SELECT count(*) FROM images").fetchone()[0]  # one card per image
    kept_html = _section(html, "kept")
    images = re.findall(r'src="data:image/jpeg;base64,([^"]+)"', kept_html)
    assert len(images) == min(kept, ReportConfig().kept_samples) > 0
    thumb = Image.open(io.BytesIO(base64.b64decode(images[0])))
    assert thumb.size == (64, 64)  # the shard's 64 px image, under the 160 px thumbnail cap
    dropped = _section(html, "dropped")
    duplicate = dropped[dropped.index('id="drop-duplicate"') :]
    assert 'src="data:image/jpeg;base64,' in duplicate.split("<h3", 1)[0]  # from work/images
    too_small = dropped[dropped.index('id="drop-too_small"') :].split("<h3", 1)[0]
    assert "8x8" in too_small and "img/tiny.png" in too_small and "<img" not in too_small
    # coverage, languages and sizes come from the same manifests
    assert "original sizes of" in _section(html, "sizes")
    assert "<td>fr</td>" in _section(html, "languages")
    assert "<td>fish</td>" in _section(html, "queries")


@pytest.mark.timeout(120)
def test_report_is_deterministic_and_out_path_is_honoured(datasets, full_report):
    _, html = full_report
    other = write_report(datasets["full"], out=datasets["tmp"] / "elsewhere" / "r.html")
    assert other == datasets["tmp"] / "elsewhere" / "r.html"
    assert other.read_text(encoding="utf-8") == html


@pytest.mark.timeout(120)
def test_text_only_dataset_has_a_report_without_shards(datasets):
    html = write_report(datasets["text"]).read_text(encoding="utf-8")
    con = manifests.open(datasets["text"])
    stats = con.execute('SELECT stage, rows_in, rows_out FROM stats ORDER BY "order"').fetchall()
    assert [r[0] for r in stats] == ["sources", "match", "balance", "text"]
    assert [(r[0], _int(r[1]), _int(r[2])) for r in _table_rows(html, "funnel")] == stats
    assert "Text only (built with --no-fetch)" in _section(html, "kept")
    assert "No image was fetched" in _section(html, "sizes")
    assert "<img" not in html
    pending = con.execute("SELECT count(*) FROM samples WHERE status = 'pending'").fetchone()[0]
    assert (
        pending > 0
        and {"pending": pending}.items()
        <= {r[0]: _int(r[1]) for r in _table_rows(html, "statuses")}.items()
    )


@pytest.mark.timeout(60)
def test_unfinished_build_and_overlap_file(datasets):
    root = datasets["tmp"] / "unfinished"
    (root / "stats").mkdir(parents=True)
    shutil.copy(datasets["full"] / "run.json", root / "run.json")
    shutil.copy(datasets["full"] / "stats" / "sources.json", root / "stats" / "sources.json")
    table = pa.table(
        {"eval_set": ["pets", "pets", "cars", "cars"], "has_copy": [True, False, False, False]}
    )
    pq.write_table(table, root / "overlap.parquet")
    html = render(root)
    assert [r[0] for r in _table_rows(html, "funnel")] == ["sources"]
    assert "No samples manifest yet" in _section(html, "kept")
    overlap = _section(html, "overlap")
    assert "<td>pets</td>" in overlap and "50.0%" in overlap and "0.0%" in overlap
    pq.write_table(pa.table({"eval_set": ["pets"]}), root / "overlap.parquet")
    assert "has no has_copy column" in _section(render(root), "overlap")


def test_a_folder_that_is_not_a_dataset_is_refused(tmp_path):
    with pytest.raises(NotADatasetError):
        write_report(tmp_path)
    with pytest.raises(NotADatasetError):
        write_report(tmp_path / "missing")
    assert not (tmp_path / "report.html").exists()
