"""Crawl from seed URLs: what one task does with its URLs of one depth, same-site links only.

The URLs are fetched concurrently (the fetcher enforces per-host limits, robots.txt and the
address policy) and then processed in the order given, so the pairs and links found do not
depend on response timing. pipeline/stages/crawl.py splits the crawl into such tasks (a lane of
hosts per depth) and picks each depth's frontier."""

import asyncio
import logging
from dataclasses import dataclass, field
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

HTML_TYPES = ("text/html", "application/xhtml+xml")


def site_key(url: str) -> str:
    """Host (without a leading www.) and non-default port: links are followed within one key."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower().removeprefix("www.")
    default = {"http": 80, "https": 443}.get(parts.scheme)
    try:
        port = parts.port
    except ValueError:
        return ""
    return host if port in (None, default) else f"{host}:{port}"


def same_site(url: str, sites: set[str]) -> bool:
    key = site_key(url)
    if key in sites:
        return True
    # Subdomains of a seed's site belong to it (blog.example.org under example.org).
    return any(key.endswith("." + site) for site in sites if site)


@dataclass
class LevelResult:
    depth: int
    pages: list[dict] = field(default_factory=list)  # rows of manifests.schema.PAGES
    pairs: list[tuple[str, str, str]] = field(default_factory=list)  # (url, caption, page_url)
    links: list[str] = field(default_factory=list)  # in page order, then document order


def _content_type(headers) -> str:
    value = headers.get("content-type") or headers.get("Content-Type") or ""
    if isinstance(value, list):
        value = value[0] if value else ""
    return value.split(";")[0].strip().lower()


def process_page(result, depth: int, recorder=None, policy=None) -> tuple[dict, list, list[str]]:
    """One fetched page → (pages row, pairs, links). Pure apart from the optional WARC record.
    The page's consent: its origin's files (checked by the fetcher), its headers and meta tags;
    a refusal by any of them keeps its pairs out, not its links (the crawl may go on)."""
    from pipeline.extract import extract_page
    from pipeline.net.consent import META_SIGNALS, opt_out_error, rows

    row = {
        "url": result.url,
        "final_url": result.final_url,
        "depth": depth,
        "status": result.status,
        "http_status": result.http_status,
        "error": result.error,
        "pairs": 0,
        "source": "crawl",
        "consent": rows(result.consent, "page"),
    }
    if result.status != "ok":
        return row, [], []
    if _content_type(result.headers) not in HTML_TYPES:
        row.update(status="not_html", error=f"content type {_content_type(result.headers)!r}")
        return row, [], []
    if recorder is not None:
        recorder.write_response(result.final_url, result.http_status, result.headers, result.body)
    page = extract_page(result.final_url, result.body, result.headers, policy)
    # the fetch's findings (every hop's files and headers), then the page's meta tags
    said = result.consent + [f for f in page.consent if f.signal in META_SIGNALS]
    row["consent"] = rows(said, "page")
    refused = opt_out_error(said)
    if refused:
        row.update(status="opted_out", error=refused)
        return row, [], page.links
    pairs = [(p.url, p.caption, p.page_url) for p in page.pairs]
    row["pairs"] = len(pairs)
    return row, pairs, page.links


async def crawl_level(fetcher, urls: list[str], depth: int, recorder=None) -> LevelResult:
    results = await asyncio.gather(*(fetcher.fetch(url) for url in urls))
    level = LevelResult(depth)
    for result in results:  # in `urls` order, whatever order the responses came in
        row, pairs, links = process_page(result, depth, recorder, fetcher.consent_policy)
        level.pages.append(row)
        level.pairs.extend(pairs)
        level.links.extend(links)
    return level
