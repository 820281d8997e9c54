"""Consent: every opt-out signal of a page or an image, as findings the manifests keep.

Each signal checked for a URL becomes one Finding, whether it said anything or not, so a row's
findings say which signals were checked, what each said and when. Across signals the most
restrictive wins: one finding with `opt_out` opts the row out. The signals (stable names):

  robots.txt               Allow/Disallow for our product token (RFC 9309 group selection)
  robots.txt content-usage IETF aipref `Content-Usage:` lines of robots.txt, per path
  tdmrep.json              W3C TDMRep, /.well-known/tdmrep.json, per path
  ai.txt                   Spawning's /ai.txt, robots-like groups, file-type patterns
  x-robots-tag             noai / noimageai / noml (+ --opt-out-token), scoped to us or unscoped
  content-usage            the aipref `Content-Usage` response header
  tdm-reservation          the TDMRep `tdm-reservation` (and `tdm-policy`) response headers
  meta robots              <meta name="robots|our token"> and <meta http-equiv="X-Robots-Tag">
  meta tdm-reservation     <meta name="tdm-reservation"> (and tdm-policy)

A TDM reservation is an opt-out unless its policy URL is one the user allows
(--allow-tdm-policy); the policy is recorded either way.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from yarl import URL

from .consent_rules import (
    OPT_OUT_TOKENS,
    AiTxtRules,
    TdmDecision,
    TdmRepRules,
    content_usage_refuses,
    meta_robots_tokens,
    tdm_header_reservation,
    x_robots_tokens,
)
from .originfiles import FOUND, UNAVAILABLE, OriginFile, OriginFileCache

ROBOTS = "robots.txt"
ROBOTS_USAGE = "robots.txt content-usage"
TDMREP = "tdmrep.json"
AI_TXT = "ai.txt"
X_ROBOTS = "x-robots-tag"
USAGE_HEADER = "content-usage"
TDM_HEADER = "tdm-reservation"
META_ROBOTS = "meta robots"
META_TDM = "meta tdm-reservation"
FILE_SIGNALS = (ROBOTS, ROBOTS_USAGE, TDMREP, AI_TXT)
META_SIGNALS = (META_ROBOTS, META_TDM)
MAX_VALUE_CHARS = 300  # a finding's raw value as recorded (web input: bounded)
TDMREP_MAX_BYTES = 1024 * 1024  # the most of a tdmrep.json read; a longer one is not parsed


@dataclass(frozen=True)
class Finding:
    signal: str  # one of the names above
    state: str  # found (the signal is there), absent, or unavailable (a file: disallow all)
    value: str | None  # what it said: a header value, the rule that matched, why unavailable
    opt_out: bool
    at: float | None  # time.time() of the response or file fetch it comes from

    def row(self, subject: str) -> dict:
        import datetime

        try:
            at = datetime.datetime.fromtimestamp(self.at, datetime.UTC) if self.at else None
        except (ValueError, OverflowError, OSError):  # a time no clock gave: not recorded
            at = None
        return {
            "subject": subject,
            "signal": self.signal,
            "state": self.state,
            "value": self.value,
            "opt_out": self.opt_out,
            "at": at,
        }


@dataclass(frozen=True)
class ConsentPolicy:
    token: str  # our robots.txt product token
    opt_out_tokens: frozenset[str] = OPT_OUT_TOKENS
    allowed_tdm_policies: frozenset[str] = frozenset()

    @classmethod
    def of(cls, config) -> ConsentPolicy:
        """From a FetchConfig."""
        extra = {t.lower() for t in config.opt_out_tokens}
        return cls(
            config.user_agent_token,
            OPT_OUT_TOKENS | extra,
            frozenset(config.allow_tdm_policies),
        )


def _cap(value: str | None) -> str | None:
    return None if value is None else value[:MAX_VALUE_CHARS]


def refusals(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if f.opt_out]


def opt_out_error(findings: Iterable[Finding | dict]) -> str | None:
    """The drop detail naming every signal that opted the row out, or None. Findings, or their
    schema.CONSENT entries as a manifest holds them."""
    said = []
    for f in (f if isinstance(f, dict) else vars(f) for f in findings):
        if f["opt_out"]:
            said.append(f"{f['signal']} ({f['value']})" if f["value"] else f["signal"])
    return "opted out by " + "; ".join(said) if said else None


def rows(findings: Iterable[Finding], subject: str = "image") -> list[dict]:
    """schema.CONSENT entries: the findings of the row's image or of its page."""
    return [f.row(subject) for f in findings]


# ------------------------------------------------------------------- per-origin files


class TdmRepCache(OriginFileCache):
    file, path = TDMREP, "/.well-known/tdmrep.json"

    def parse(self, body: bytes):
        rules = TdmRepRules.parse(body)
        return rules, rules.error


class AiTxtCache(OriginFileCache):
    file, path = AI_TXT, "/ai.txt"

    def __init__(self, fetch, user_agent_token: str, **kw):
        super().__init__(fetch, **kw)
        self.token = user_agent_token

    def parse(self, body: bytes):
        return AiTxtRules.parse(body, self.token), None


def _file_finding(signal: str, entry: OriginFile, rule, refuses: bool) -> Finding:
    """A per-origin file's finding for one URL: unavailable refuses everything; a file that is
    there says what its matching rule says (value None: no rule for this path)."""
    if entry.state == UNAVAILABLE:
        return Finding(signal, UNAVAILABLE, _cap(entry.note), True, entry.fetched_at)
    if entry.state != FOUND:
        return Finding(signal, entry.state, _cap(entry.note), False, entry.fetched_at)
    value = rule if rule is not None else (entry.note and f"no rules: {entry.note}")
    return Finding(signal, FOUND, _cap(value), refuses, entry.fetched_at)


def _tdm(decision: TdmDecision | None, policy: ConsentPolicy) -> tuple[str | None, bool]:
    if decision is None:
        return None, False
    refuses = decision.reserved and decision.policy not in policy.allowed_tdm_policies
    return decision.rule, refuses


def file_findings(
    u: URL,
    robots: OriginFile,
    robots_reason: str | None,
    tdmrep: OriginFile,
    aitxt: OriginFile,
    policy: ConsentPolicy,
) -> list[Finding]:
    """The findings of an origin's files for URL `u` (its path and query, as robots.txt
    matches them). `robots_reason`: why robots.txt refuses the URL, None if it allows it."""
    from .robots import content_usage_of

    path = u.raw_path_qs or "/"
    out = [_file_finding(ROBOTS, robots, robots_reason, robots_reason is not None)]
    usage = content_usage_of(robots) if robots.state == FOUND else None
    rule = usage.decide(path) if usage is not None else None
    out.append(_robots_usage(robots, rule))
    tdm = tdmrep.rules.decide(path) if tdmrep.state == FOUND and tdmrep.rules else None
    out.append(_file_finding(TDMREP, tdmrep, *_tdm(tdm, policy)))
    ai = aitxt.rules.decide(path) if aitxt.state == FOUND and aitxt.rules else None
    out.append(_file_finding(AI_TXT, aitxt, ai and ai.rule, bool(ai and ai.refuses)))
    return out


def _robots_usage(robots: OriginFile, rule) -> Finding:
    # an unavailable robots.txt says nothing we may rely on: its AI preferences refuse too
    # (for an image the robots.txt finding already does; for a page we did not crawl, this one)
    if robots.state != FOUND:
        refuses = robots.state == UNAVAILABLE
        return Finding(ROBOTS_USAGE, robots.state, _cap(robots.note), refuses, robots.fetched_at)
    return Finding(
        ROBOTS_USAGE,
        FOUND,
        _cap(rule and rule.rule),
        bool(rule and rule.refuses),
        robots.fetched_at,
    )


# ------------------------------------------------------------------- headers and meta tags


def header_findings(
    headers: Mapping | Iterable | None, policy: ConsentPolicy, at: float | None = None
) -> list[Finding]:
    """X-Robots-Tag, Content-Usage and tdm-reservation of one response."""
    from pipeline.extract import header_values

    at = time.time() if at is None else at
    x_robots = header_values(headers, "x-robots-tag")
    said = x_robots_tokens(x_robots, policy.token) & policy.opt_out_tokens
    out = [_said(X_ROBOTS, ", ".join(x_robots) or None, bool(said), at)]
    usage = header_values(headers, "content-usage")
    joined = ", ".join(usage)
    out.append(
        _said(USAGE_HEADER, joined or None, bool(usage) and content_usage_refuses(joined), at)
    )
    # every value a response repeats counts: "0" then "1" is a conflict, read as reserved
    reservation = ", ".join(header_values(headers, "tdm-reservation")) or None
    tdm_policy = next(iter(header_values(headers, "tdm-policy")), None)
    rule, refuses = _tdm(tdm_header_reservation(reservation, tdm_policy), policy)
    out.append(_said(TDM_HEADER, rule, refuses, at))
    return out


def meta_findings(
    metas: Iterable[tuple[str, str]], policy: ConsentPolicy, at: float | None
) -> list[Finding]:
    """<meta> robots directives and TDMRep tags of one page: (name or http-equiv, content)."""
    metas = list(metas)
    robots = [
        c for n, c in metas if n.strip().lower() in ("robots", policy.token.lower(), "x-robots-tag")
    ]
    said = meta_robots_tokens(metas, policy.token) & policy.opt_out_tokens
    out = [_said(META_ROBOTS, ", ".join(robots) or None, bool(said), at)]
    reserved = [c for n, c in metas if n.strip().lower() == "tdm-reservation"]
    policies = [c for n, c in metas if n.strip().lower() == "tdm-policy"]
    reservation = ", ".join(reserved) or None  # repeated tags: a conflict is a reservation
    decision = tdm_header_reservation(reservation, policies[0] if policies else None)
    rule, refuses = _tdm(decision, policy)
    out.append(_said(META_TDM, rule, refuses, at))
    return out


def _said(signal: str, value: str | None, opt_out: bool, at: float | None) -> Finding:
    return Finding(signal, "found" if value else "absent", _cap(value), opt_out, at)


class StoredFiles:
    """The per-origin files a build stored (pipeline.origins), looked up without a network: the
    findings for a page the build did not fetch itself (an archived page's origin)."""

    def __init__(self, records, config):
        from .robots import RobotsCache

        self.policy = ConsentPolicy.of(config)
        self.caches = [
            RobotsCache(None, config.user_agent_token, max_crawl_delay_s=config.max_crawl_delay_s),
            TdmRepCache(None),
            AiTxtCache(None, config.user_agent_token),
        ]
        for cache in self.caches:
            cache.preload(records, keep_stale=True)
        self._pages: dict[str, list[Finding]] = {}  # page URL -> findings: rows share pages

    def page_findings(self, url: str) -> list[Finding]:
        found = self._pages.get(url)
        if found is None:
            if len(self._pages) > 100_000:
                self._pages.clear()  # bounded: one part's pages at a time, in practice
            found = self._pages[url] = self._page_findings(url)
        return found

    def _page_findings(self, url: str) -> list[Finding]:
        """The page's per-origin file findings; [] when the build stored none of its origin.
        robots.txt's Allow/Disallow is left out: it rules crawling, and the page was not
        crawled; its Content-Usage lines, TDMRep and ai.txt rule the use of the page."""
        try:
            u = URL(url)
        except (ValueError, TypeError):
            return []
        robots, tdmrep, aitxt = (cache.cached(u) for cache in self.caches)
        if robots is None or tdmrep is None or aitxt is None:
            return []
        found = file_findings(u, robots, None, tdmrep, aitxt, self.policy)
        return [f for f in found if f.signal != ROBOTS]
