"""Pure parsers for the "not for AI training" opt-out signals a crawler must honour (2026).

IETF aipref `Content-Usage` (header and robots.txt lines), Spawning's ai.txt, W3C TDMRep (JSON
file, headers, meta tags) and `noai`-style X-Robots-Tag / meta robots tokens. Input comes from
arbitrary web servers, so nothing here raises on bad input: garbage yields "no rules" (or an
`error` note). No I/O; callers fetch the bodies.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar
from urllib.parse import unquote

# aipref vocabulary is hierarchical: refusing a broader category (`bots`, `tdm`) refuses AI
# training too. Older draft spellings are kept because sites copied them before the RFC settled.
AI_TRAINING_KEYS: frozenset[str] = frozenset(
    {"train-ai", "train-genai", "ai", "genai", "tdm", "bots"}
    | {"ai-train", "ai-training", "ai-use", "train-ml", "ml"}  # pre-RFC draft spellings
)
_REFUSING_VALUES = frozenset({"n", "no", "?0", "0", "false", "disallow", "deny", "none"})
OPT_OUT_TOKENS = frozenset({"noai", "noimageai", "noml"})

_TEXT_LIMIT = 500 * 1024  # robots.txt / ai.txt: RFC 9309 asks parsers to read at least 500 KiB
_LINE_LIMIT = 10_000
_JSON_LIMIT = 1024 * 1024
_HEADER_LIMIT = 64 * 1024  # a single header/preference string longer than this is abuse
_RULE_CAP = 300  # provenance strings are logged and stored per record; keep them bounded

# X-Robots-Tag directives that carry a `name: value`; they must not be read as agent prefixes.
_VALUED_DIRECTIVES = frozenset(
    {"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"}
)
_AGENT_PREFIX = re.compile(r"\s*([A-Za-z0-9_./-]+)\s*:(.*)", re.DOTALL)
_FILE_TYPE = re.compile(r"\*(\.[^*/?$]+)\$?")
T = TypeVar("T")


def _decode(body: object, limit: int) -> str:
    """Bytes -> text (UTF-8, bad bytes replaced), capped, BOM stripped; non-text -> ""."""
    if isinstance(body, bytes | bytearray | memoryview):
        text = bytes(body[:limit]).decode("utf-8", errors="replace")
    elif isinstance(body, str):
        text = body[:limit]
    else:
        return ""
    return text.removeprefix("\ufeff")


def _norm_token(token: object) -> str:
    return token.strip().lower() if isinstance(token, str) else ""


@lru_cache(maxsize=4096)  # a URL's path is matched against every pattern of its origin's files
def _unquote(text: str) -> str:
    # RFC 9309 2.2.2: compare decoded octets, but %2F stays encoded so it never becomes a separator.
    return "%2F".join(unquote(part) for part in re.split("%2[fF]", text))


def _is_refusing(value: str) -> bool:
    return value.strip().strip("\"'").strip().lower() in _REFUSING_VALUES


def content_usage_refuses(value: str) -> bool:
    """True when a Content-Usage preference string refuses any AI-training category.

    Tolerant of the ways sites actually write it: `,` `;` or whitespace separators, spaces around
    `=`, any case, quoted values, SF parameters (`train-ai=n;exp=1`: the parameter is split off and
    ignored as an unknown key). Deliberately "any refusal wins" even where a structured-field
    parser would let a later duplicate key override it: we pick the most restrictive reading.
    """
    text = _decode(value, _HEADER_LIMIT)
    text = re.sub(r"\s*=\s*", "=", text)
    for item in re.split(r"[,;\s]+", text):
        key, sep, val = item.partition("=")
        # A bare key is SF boolean true (= "y"), so only `key=value` items can refuse.
        if sep and key.lower() in AI_TRAINING_KEYS and _is_refusing(val):
            return True
    return False


@lru_cache(maxsize=16384)  # bounded: a hostile file's patterns cannot fill memory
def _prepare_pattern(pattern: str) -> tuple[str, str, int] | None:
    """Pattern -> (kind, normalized text, specificity)."""
    pattern = pattern.strip()
    if not pattern:
        return None  # an empty pattern is "no rule" in robots.txt, so it matches nothing here
    file_type = _FILE_TYPE.fullmatch(pattern)
    if file_type:
        return "ext", _unquote(file_type.group(1)).lower(), len(pattern)
    if not pattern.startswith(("/", "*")):
        pattern = "/" + pattern
    decoded = _unquote(pattern)
    return "glob", decoded, len(decoded)


def _glob_match(pattern: str, path: str) -> bool:
    """RFC 9309 matching without regexes: `*` is any run, trailing `$` anchors, else prefix.

    Leftmost greedy search of each literal piece is exact for this grammar and stays O(n*m), so a
    hostile `/*a*a*a*...` pattern cannot trigger regex backtracking blow-ups.
    """
    anchored = pattern.endswith("$")
    pieces = (pattern[:-1] if anchored else pattern).split("*")
    if not path.startswith(pieces[0]):
        return False
    if len(pieces) == 1:
        return path == pieces[0] if anchored else True
    pos, last = len(pieces[0]), pieces[-1]
    for piece in pieces[1:-1]:
        found = path.find(piece, pos)
        if found < 0:
            return False
        pos = found + len(piece)
    if anchored:
        return len(path) - len(last) >= pos and path.endswith(last)
    return path.find(last, pos) >= 0


def pattern_match_length(pattern: str, path: str) -> int | None:
    """Specificity (pattern length) when the robots-style `pattern` matches `path`, else None.

    `path` is the URL path plus `?query`. Spawning ai.txt file-type patterns (`*.jpg`) match the
    last path segment's extension case-insensitively, ignoring the query. The returned length is
    that of the normalized pattern (leading `/` added, percent-decoded) so equivalent spellings
    compare equal in longest-match.
    """
    if not isinstance(pattern, str) or not isinstance(path, str):
        return None
    prepared = _prepare_pattern(pattern[:_HEADER_LIMIT])
    if prepared is None:
        return None
    kind, norm, length = prepared
    if not path.startswith("/"):
        path = "/" + path
    if kind == "ext":
        segment = _unquote(path.partition("?")[0]).rsplit("/", 1)[-1]
        return length if segment.lower().endswith(norm) else None
    return length if _glob_match(norm, _unquote(path)) else None


def _robots_lines(text: str) -> Iterator[tuple[str, str]]:
    """(lowercased key, value) of each `key: value` line, comments stripped, within the caps."""
    text = _decode(text, _TEXT_LIMIT)
    for raw in re.split(r"\r\n?|\n", text, maxsplit=_LINE_LIMIT)[:_LINE_LIMIT]:
        key, sep, value = raw.split("#", 1)[0].partition(":")
        if sep and key.strip():
            yield key.strip().lower(), value.strip()


def _agent_names_us(agent: str, token: str) -> bool:
    # RFC 9309: the product token, optionally followed by `/version`, case-insensitively.
    agent = agent.lower()
    return bool(token) and (agent == token or agent.startswith(token + "/"))


def select_group_lines(text: str, token: str) -> list[tuple[str, str]]:
    """The rule lines that apply to `token` in a robots.txt-like file (RFC 9309 group selection).

    Groups naming us are merged and shadow the `*` groups entirely; without one, the `*` groups
    are merged; without either, no group lines. Content-Usage lines before the first User-agent
    line are file-wide (aipref) and are always prepended, whichever groups were selected. Other
    lines before the first group are ignored.
    """
    token = _norm_token(token)
    global_lines: list[tuple[str, str]] = []
    groups: list[tuple[list[str], list[tuple[str, str]]]] = []
    in_agent_run = False
    for key, value in _robots_lines(text):
        if key == "user-agent":
            if not in_agent_run:
                groups.append(([], []))
            groups[-1][0].append(value)
            in_agent_run = True
        elif groups:
            groups[-1][1].append((key, value))
            in_agent_run = False
        elif key == "content-usage":
            global_lines.append((key, value))
    ours = [rules for agents, rules in groups if any(_agent_names_us(a, token) for a in agents)]
    if not ours:
        ours = [rules for agents, rules in groups if "*" in agents]
    return global_lines + [line for rules in ours for line in rules]


@dataclass(frozen=True)
class Rule:
    rule: str  # the raw matched line, capped at 300 chars, for provenance
    refuses: bool


def _longest(entries: Iterable[tuple[str, bool, T]], path: str) -> T | None:
    """Payload of the longest matching pattern; on a tie the restrictive one (flag True) wins."""
    best: tuple[int, bool, T] | None = None
    for pattern, restrictive, payload in entries:
        length = pattern_match_length(pattern, path)
        if length is not None and (best is None or (length, restrictive) > best[:2]):
            best = (length, restrictive, payload)
    return None if best is None else best[2]


class _PathRules:
    def __init__(self, entries: list, error: str | None = None) -> None:
        self._entries = entries  # (path pattern, restrictive?, decision to return)
        self.error = error  # why the file yielded no rules, e.g. "invalid JSON"; None when parsed


class ContentUsageRules(_PathRules):
    """aipref Content-Usage lines from robots.txt, as they apply to our product token."""

    @classmethod
    def parse(cls, body: bytes | str, token: str) -> ContentUsageRules:
        entries = []
        for key, value in select_group_lines(_decode(body, _TEXT_LIMIT), token):
            if key != "content-usage" or not value:
                continue
            # `Content-Usage: [path] preferences`: a leading `/` or `*` word is a path scope.
            words = value.split(None, 1)
            if words[0].startswith(("/", "*")):
                pattern, prefs = words[0], words[1] if len(words) > 1 else ""
            else:
                pattern, prefs = "/", value
            raw = f"Content-Usage: {value}"[:_RULE_CAP]
            rule = Rule(rule=raw, refuses=content_usage_refuses(prefs))
            entries.append((pattern, rule.refuses, rule))
        return cls(entries)

    def decide(self, path: str) -> Rule | None:
        return _longest(self._entries, path)


class AiTxtRules(_PathRules):
    """Spawning ai.txt Allow/Disallow lines, as they apply to our product token."""

    @classmethod
    def parse(cls, body: bytes | str, token: str) -> AiTxtRules:
        entries = []
        for key, value in select_group_lines(_decode(body, _TEXT_LIMIT), token):
            # An empty Allow/Disallow value is "no rule", as in robots.txt.
            if key in ("allow", "disallow") and value:
                raw = f"{key.capitalize()}: {value}"[:_RULE_CAP]
                rule = Rule(rule=raw, refuses=key == "disallow")
                entries.append((value, rule.refuses, rule))
        return cls(entries)

    def decide(self, path: str) -> Rule | None:
        # Unlike RFC 9309, whose equal-length tie goes to Allow, Disallow wins ties here: an
        # ambiguous training opt-out is read as a refusal (most restrictive).
        return _longest(self._entries, path)


@dataclass(frozen=True)
class TdmDecision:
    reserved: bool  # True: text-and-data-mining rights are reserved (opted out)
    policy: str | None  # tdm-policy URL, when given
    rule: str  # provenance: the matched entry or header, capped at 300 chars


def _reservation(value: object) -> bool | None:
    """0/1 reservation, tolerating booleans and "0"/"1" strings; anything else is malformed."""
    if isinstance(value, str):
        value = value.strip()
    elif not isinstance(value, int):  # bool is an int: True/False map through 1/0 below
        return None
    return {1: True, 0: False, "1": True, "0": False}.get(value)


def _compact_json(entry: dict) -> str:
    try:
        text = json.dumps(entry, separators=(",", ":"), ensure_ascii=False)
    except (ValueError, RecursionError):
        # Absurdly nested extra fields: keep just the fields TDMRep defines (all scalars here).
        known = {k: entry.get(k) for k in ("location", "tdm-reservation", "tdm-policy")}
        text = json.dumps(known, separators=(",", ":"), ensure_ascii=False, default=str)
    return text[:_RULE_CAP]


class TdmRepRules(_PathRules):
    """W3C TDMRep `/.well-known/tdmrep.json`: per-location TDM reservations."""

    @classmethod
    def parse(cls, body: bytes) -> TdmRepRules:
        if not isinstance(body, bytes | bytearray | memoryview | str):
            return cls([], "not bytes")
        if len(body) > _JSON_LIMIT:
            return cls([], "over 1 MiB")  # refuse before decoding: parsing cost is the attack
        try:
            data = json.loads(_decode(body, _JSON_LIMIT))
        except (ValueError, RecursionError):
            return cls([], "invalid JSON")
        if not isinstance(data, list):
            return cls([], "not a JSON array")
        return cls([entry for item in data if (entry := cls._entry(item)) is not None])

    @staticmethod
    def _entry(item: object) -> tuple[str, bool, TdmDecision] | None:
        if not isinstance(item, dict) or not isinstance(item.get("location"), str):
            return None
        reserved = _reservation(item.get("tdm-reservation"))
        if reserved is None:
            return None
        policy = item.get("tdm-policy")
        policy = (policy.strip() or None) if isinstance(policy, str) else None
        decision = TdmDecision(reserved=reserved, policy=policy, rule=_compact_json(item))
        return item["location"], reserved, decision

    def decide(self, path: str) -> TdmDecision | None:
        """A reservation by any matching location holds (the longest such); else the longest
        matching location. Most restrictive: the TDMRep report's rule order (first match, or
        most specific) then never matters for an opt-out."""
        reserving = _longest([e for e in self._entries if e[1]], path)
        return reserving if reserving is not None else _longest(self._entries, path)


def tdm_header_reservation(reservation: str | None, policy: str | None) -> TdmDecision | None:
    """TDMRep `tdm-reservation` / `tdm-policy` header (or meta tag) values -> decision.

    None when no reservation is given. A value that is not clearly 0 or 1 counts as reserved:
    the publisher tried to say something, and the safe reading of a garbled opt-out is opt-out.
    Repeated headers joined with commas (`1, 1`) are accepted when they agree.
    """
    if reservation is None:
        return None
    raw = _decode(reservation if isinstance(reservation, str) else str(reservation), 200)
    if not raw.strip():
        return None
    parts = {p.strip().strip("\"'").strip() for p in raw.split(",")} - {""}
    clean_policy = (policy.strip() or None) if isinstance(policy, str) else None
    if parts in ({"0"}, {"1"}):
        reserved = parts == {"1"}
        rule = f"tdm-reservation: {raw.strip()}"
    else:
        reserved, rule = True, f"tdm-reservation: {raw.strip()!r} (unparsable, read as reserved)"
    return TdmDecision(reserved=reserved, policy=clean_policy, rule=rule[:_RULE_CAP])


def _items(values: object) -> Iterator[object]:
    """Iterate caller-supplied collections without trusting them to be iterable."""
    try:
        yield from iter(values)
    except TypeError:
        return


def _header_tokens(value: str, token: str) -> set[str]:
    """Directives of one X-Robots-Tag value that apply to `token` (already lowercased)."""
    found: set[str] = set()
    applies = True  # unprefixed directives apply to every crawler
    for part in value.split(","):
        prefix = _AGENT_PREFIX.fullmatch(part)
        if prefix and prefix.group(1).lower() in _VALUED_DIRECTIVES:
            # `max-snippet: 20` and friends: keep the directive name, its value is no token.
            if applies:
                found.add(prefix.group(1).lower())
            continue
        if prefix:
            # `name: directives` scopes this and the following parts to `name` (Google's syntax).
            applies = _agent_names_us(prefix.group(1), token)
            part = prefix.group(2)
        if applies:
            found.update(word.lower() for word in part.split())
    return found


def x_robots_tokens(values: Iterable[str], token: str) -> set[str]:
    """Lowercased X-Robots-Tag directives (from all header values) that apply to `token`."""
    token = _norm_token(token)
    found: set[str] = set()
    if isinstance(values, str | bytes):
        values = [values]  # a lone header value, not an iterable of characters
    for value in _items(values):
        if isinstance(value, str | bytes):
            found |= _header_tokens(_decode(value, _HEADER_LIMIT), token)
    return found


def meta_robots_tokens(metas: Iterable[tuple[str, str]], token: str) -> set[str]:
    """Directives from `<meta name|http-equiv=... content=...>` pairs that apply to `token`.

    `robots` and our own token name robots metas; `x-robots-tag` (http-equiv) is read as a
    header value, agent prefixes included. Malformed pairs are skipped.
    """
    token = _norm_token(token)
    found: set[str] = set()
    for pair in _items(metas):
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            continue
        name, content = pair
        if not isinstance(name, str) or not isinstance(content, str):
            continue
        name, content = name.strip().lower(), content[:_HEADER_LIMIT]
        if name == "robots" or (token and name == token):
            found.update(w.lower() for w in re.split(r"[,\s]+", content) if w)
        elif name == "x-robots-tag":
            found |= _header_tokens(content, token)
    return found
