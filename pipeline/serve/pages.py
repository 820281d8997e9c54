"""HTML of the explorer's pages: Jinja2 templates with autoescaping on for every value.

Captions, URLs and errors come from the open web. Autoescaping turns `<`, `>`, `&`, `"` and `'`
into entities in text and attributes alike; a URL becomes a link only if it is http(s)
(`web_href`), so a `javascript:` or `data:` caption URL is shown as text. The pages carry no
script, and the Content-Security-Policy the app sends forbids any.
"""

import json
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

TEMPLATES = Path(__file__).parent / "templates"
SHORT_URL = 70  # characters of a URL shown in a card


def web_href(url) -> str | None:
    """`url` if it is an absolute http(s) URL a browser may follow, else None."""
    if not isinstance(url, str) or any(ord(c) < 33 for c in url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    return url if parts.scheme.lower() in ("http", "https") and parts.netloc else None


def short(url) -> str:
    text = "" if url is None else str(url)
    return text if len(text) <= SHORT_URL else text[: SHORT_URL - 1] + "…"


@cache
def environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,  # every template, whatever its name
        undefined=jinja2.StrictUndefined,  # a missing value is a bug, not an empty string
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["web_href"] = web_href
    env.filters["short"] = short
    return env


def render(template: str, **values) -> str:
    return environment().get_template(template).render(**values)


def column_value(value) -> str:
    """A manifest value as text for the detail table (lists and structs as JSON)."""
    if value is None:
        return "null"
    if isinstance(value, list | dict):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)
