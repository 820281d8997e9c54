import json
import time

import pytest

from pipeline.net.consent_rules import (
    AI_TRAINING_KEYS,
    OPT_OUT_TOKENS,
    AiTxtRules,
    ContentUsageRules,
    Rule,
    TdmDecision,
    TdmRepRules,
    content_usage_refuses,
    meta_robots_tokens,
    pattern_match_length,
    select_group_lines,
    tdm_header_reservation,
    x_robots_tokens,
)

pytestmark = pytest.mark.timeout(60)

TOKEN = "clipengine-bot"
# Deterministic "binary garbage": every byte value, invalid UTF-8, NULs, a BOM in the middle.
GARBAGE = bytes(range(256)) * 4 + b"\xff\xfe\x00\xc3\x28\xef\xbb\xbf"


# --- aipref Content-Usage strings ---------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "train-ai=n",
        "train-genai=n",
        "ai=n",
        "bots=n",
        "tdm=n",
        "search=y, train-ai=n",
        "search=y;train-ai=n",
        "search=y train-ai=n",
        "train-ai = n",
        "TRAIN-AI=N",
        "train-ai=?0",
        'train-ai="no"',
        "train-ai=n;exp=1",
        "ai-training=disallow",
        "train-ml=false",
    ],
)
def test_content_usage_refusals(value):
    assert content_usage_refuses(value) is True


@pytest.mark.parametrize(
    "value",
    [
        "search=y",
        "train-ai=y",
        "train-ai",  # bare key: structured-field boolean true, i.e. allowed
        "train-ai=?1",
        "search=n",  # refusing search is not refusing training
        "unknown-key=n",
        "",
        "===,,,;;;",
        "n",
    ],
)
def test_content_usage_non_refusals(value):
    assert content_usage_refuses(value) is False


def test_content_usage_garbage_is_false():
    assert content_usage_refuses(GARBAGE.decode("latin-1")) is False
    assert content_usage_refuses(GARBAGE) is False  # bytes tolerated
    assert content_usage_refuses(None) is False  # type: ignore[arg-type]
    assert content_usage_refuses(12) is False  # type: ignore[arg-type]


def test_ai_training_keys_are_the_documented_set():
    assert {"train-ai", "train-genai", "bots", "tdm", "ml"} <= AI_TRAINING_KEYS
    assert "search" not in AI_TRAINING_KEYS


# --- path patterns ------------------------------------------------------------------------------


def test_prefix_wildcard_and_anchor():
    assert pattern_match_length("/private", "/private/x") == len("/private")
    assert pattern_match_length("/private", "/public") is None
    assert pattern_match_length("/*.php$", "/a/b.php") == len("/*.php$")
    assert pattern_match_length("/*.php$", "/a/b.php?x=1") is None
    assert pattern_match_length("/a*c", "/abbbc/d") == 4
    assert pattern_match_length("/a*c$", "/abbbcd") is None
    assert pattern_match_length("/exact$", "/exact") == 7
    assert pattern_match_length("/exact$", "/exactly") is None
    assert pattern_match_length("*", "/anything") == 1
    assert pattern_match_length("/q?id=", "/q?id=5") == 6


def test_pattern_without_slash_gets_one_and_empty_matches_nothing():
    assert pattern_match_length("private", "/private/x") == len("/private")
    assert pattern_match_length("", "/x") is None
    assert pattern_match_length("   ", "/x") is None


def test_percent_encoding_compared_decoded_except_slash():
    assert pattern_match_length("/caf%C3%A9", "/café/menu") is not None
    assert pattern_match_length("/café", "/caf%c3%a9/menu") is not None
    assert pattern_match_length("/%7Euser", "/~user/x") is not None
    assert pattern_match_length("/a%2Fb", "/a/b") is None  # %2F is not a separator
    assert pattern_match_length("/a%2fb", "/a%2Fb") is not None


def test_file_type_patterns():
    assert pattern_match_length("*.jpg", "/a/b.JPG?x=1") == len("*.jpg")
    assert pattern_match_length("*.JPEG", "/photo.jpeg") == len("*.JPEG")
    assert pattern_match_length("*.jpg", "/a/jpg.html") is None
    assert pattern_match_length("*.jpg", "/a/b.jpg.html") is None
    assert pattern_match_length("*.jpg", "/a/b.png?f=x.jpg") is None  # query ignored


def test_hostile_wildcard_pattern_is_fast():
    start = time.monotonic()
    assert pattern_match_length("/" + "*a" * 200 + "b", "/" + "a" * 20000) is None
    assert time.monotonic() - start < 2


def test_pattern_bad_types():
    assert pattern_match_length(None, "/x") is None  # type: ignore[arg-type]
    assert pattern_match_length("/x", b"/x") is None  # type: ignore[arg-type]


# --- robots.txt group selection -----------------------------------------------------------------


ROBOTS = """\
Content-Usage: search=y   # file-wide
Disallow: /ignored-before-groups

User-agent: otherbot
Content-Usage: train-ai=y

User-agent: *
Content-Usage: train-ai=n

User-Agent: CLIPENGINE-BOT/2.1
user-agent: somebot
content-usage: train-genai=n
Disallow: /x
"""


def test_our_group_shadows_star_and_global_lines_prepended():
    assert select_group_lines(ROBOTS, TOKEN) == [
        ("content-usage", "search=y"),
        ("content-usage", "train-genai=n"),
        ("disallow", "/x"),
    ]


def test_star_group_when_not_named():
    assert select_group_lines(ROBOTS, "unnamedbot") == [
        ("content-usage", "search=y"),
        ("content-usage", "train-ai=n"),
    ]
    assert select_group_lines(ROBOTS, "otherbot") == [
        ("content-usage", "search=y"),
        ("content-usage", "train-ai=y"),
    ]


def test_token_prefix_is_not_a_match_and_groups_merge():
    text = (
        "User-agent: clipengine-bot-extra\nDisallow: /a\n"
        "User-agent: clipengine-bot\nDisallow: /b\n"
        "User-agent: clipengine-bot\nDisallow: /c\n"
    )
    assert select_group_lines(text, TOKEN) == [("disallow", "/b"), ("disallow", "/c")]
    assert select_group_lines("User-agent: otherbot\nDisallow: /\n", TOKEN) == []


def test_line_caps():
    text = "User-agent: *\n" + "Disallow: /a\n" * 20000
    assert len(select_group_lines(text, TOKEN)) == 9999
    huge = "User-agent: *\nDisallow: /" + "a" * (600 * 1024) + "\nDisallow: /b\n"
    lines = select_group_lines(huge, TOKEN)
    assert lines[-1][1].startswith("/aaa") and ("disallow", "/b") not in lines


def test_bytes_with_bom_and_crlf():
    body = b"\xef\xbb\xbfUser-agent: clipengine-bot\r\nContent-Usage: train-ai=n\r\n"
    assert select_group_lines(body, TOKEN) == [("content-usage", "train-ai=n")]  # type: ignore[arg-type]


def test_content_usage_rules_per_agent():
    assert ContentUsageRules.parse(ROBOTS, TOKEN).decide("/img.jpg").refuses is True
    assert ContentUsageRules.parse(ROBOTS, "otherbot").decide("/img.jpg").refuses is False
    assert ContentUsageRules.parse(ROBOTS, "unnamedbot").decide("/img.jpg").refuses is True


def test_content_usage_path_scoped_longest_match():
    body = b"User-agent: *\nContent-Usage: train-ai=n\nContent-Usage: /public/ train-ai=y\n"
    rules = ContentUsageRules.parse(body, TOKEN)
    assert rules.decide("/private/a.jpg") == Rule(rule="Content-Usage: train-ai=n", refuses=True)
    assert rules.decide("/public/a.jpg") == Rule(
        rule="Content-Usage: /public/ train-ai=y", refuses=False
    )


def test_content_usage_tie_goes_to_refusal_and_global_lines():
    body = "Content-Usage: train-ai=n\nUser-agent: clipengine-bot\nContent-Usage: train-ai=y\n"
    assert ContentUsageRules.parse(body, TOKEN).decide("/x").refuses is True
    body = "Content-Usage: /scoped/ ai=n\n"
    rules = ContentUsageRules.parse(body, TOKEN)
    assert rules.decide("/scoped/x").refuses is True
    assert rules.decide("/other") is None


def test_content_usage_no_lines():
    assert ContentUsageRules.parse("User-agent: *\nDisallow: /\n", TOKEN).decide("/") is None
    assert ContentUsageRules.parse(b"", TOKEN).decide("/") is None


def test_rule_text_capped():
    body = "User-agent: *\nContent-Usage: train-ai=n " + "x=y " * 200 + "\n"
    rule = ContentUsageRules.parse(body, TOKEN).decide("/")
    assert rule.refuses is True and len(rule.rule) == 300


# --- ai.txt -------------------------------------------------------------------------------------


AI_TXT = """\
# Spawning ai.txt
User-Agent: *
Disallow: *.jpg
Disallow: *.png
Allow: *.txt
Disallow:

User-Agent: otherbot
Disallow: /
"""


def test_ai_txt_file_types():
    rules = AiTxtRules.parse(AI_TXT, TOKEN)
    assert rules.decide("/a/b.JPG?x=1") == Rule(rule="Disallow: *.jpg", refuses=True)
    assert rules.decide("/a/jpg.html") is None
    assert rules.decide("/notes.txt").refuses is False
    assert rules.decide("/page.html") is None  # empty Disallow is no rule


def test_ai_txt_agent_scoping():
    other = AiTxtRules.parse(AI_TXT, "otherbot")
    assert other.decide("/anything.html").refuses is True
    assert other.decide("/notes.txt").refuses is True  # otherbot's group shadows `*`


def test_ai_txt_allow_longer_overrides_and_tie_goes_to_disallow():
    body = "User-agent: clipengine-bot\nDisallow: /\nAllow: /open/\n"
    rules = AiTxtRules.parse(body, TOKEN)
    assert rules.decide("/closed/a.jpg").refuses is True
    assert rules.decide("/open/a.jpg") == Rule(rule="Allow: /open/", refuses=False)
    tie = AiTxtRules.parse("User-agent: *\nAllow: /a\nDisallow: /a\n", TOKEN)
    assert tie.decide("/a/b").refuses is True


# --- TDMRep -------------------------------------------------------------------------------------


def test_tdmrep_a_reservation_by_any_matching_location_holds():
    body = json.dumps(
        [
            {"location": "/img/*", "tdm-reservation": 1, "tdm-policy": "https://ex.com/p.json"},
            {"location": "/img/open/*", "tdm-reservation": 0},  # first match or longest: no
            {"location": "/open/*", "tdm-reservation": 0},
            {"location": "/open/closed/", "tdm-reservation": "1"},
        ]
    ).encode()
    rules = TdmRepRules.parse(body)
    assert rules.error is None
    top = rules.decide("/img/a.jpg")
    assert top.reserved is True and top.policy == "https://ex.com/p.json"
    assert json.loads(top.rule)["location"] == "/img/*"
    assert rules.decide("/img/open/a.jpg").reserved is True  # most restrictive, whatever order
    assert rules.decide("/open/a.jpg") == TdmDecision(
        reserved=False, policy=None, rule='{"location":"/open/*","tdm-reservation":0}'
    )
    assert rules.decide("/open/closed/x").reserved is True


def test_tdmrep_tie_reserved_wins_and_no_match():
    body = b'[{"location": "/a", "tdm-reservation": 0}, {"location": "/a", "tdm-reservation": 1}]'
    rules = TdmRepRules.parse(body)
    assert rules.decide("/a/x").reserved is True
    assert rules.decide("/b") is None


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", "invalid JSON"),
        (b'{"location": "/", "tdm-reservation": 1}', "not a JSON array"),
        (b'"string"', "not a JSON array"),
        (GARBAGE, "invalid JSON"),
        (b"[" * 100000 + b"]" * 100000, "invalid JSON"),  # nesting past the recursion limit
        (None, "not bytes"),
    ],
)
def test_tdmrep_errors(body, error):
    rules = TdmRepRules.parse(body)
    assert rules.error == error
    assert rules.decide("/") is None


def test_tdmrep_huge_body_is_an_error_and_fast():
    body = b"[" + b'{"location":"/","tdm-reservation":1},' * 300_000 + b"{}]"
    assert len(body) > 10 * 1024 * 1024
    start = time.monotonic()
    rules = TdmRepRules.parse(body)
    assert time.monotonic() - start < 0.5
    assert rules.error == "over 1 MiB" and rules.decide("/") is None


def test_tdmrep_bad_entries_skipped():
    body = json.dumps(
        [
            "not a dict",
            None,
            {"tdm-reservation": 1},
            {"location": 5, "tdm-reservation": 1},
            {"location": "/a", "tdm-reservation": 2},
            {"location": "/a", "tdm-reservation": "yes"},
            {"location": "/a", "tdm-reservation": 1.0},
            {"location": "/a", "tdm-reservation": None},
            {"location": "/b", "tdm-reservation": True, "tdm-policy": 7},
            {"location": "/c", "tdm-reservation": " 0 "},
        ]
    ).encode()
    rules = TdmRepRules.parse(body)
    assert rules.error is None
    assert rules.decide("/a") is None
    assert rules.decide("/b") == TdmDecision(
        reserved=True, policy=None, rule='{"location":"/b","tdm-reservation":true,"tdm-policy":7}'
    )
    assert rules.decide("/c").reserved is False


def test_tdmrep_bom_and_empty_array():
    rules = TdmRepRules.parse(b'\xef\xbb\xbf[{"location": "*", "tdm-reservation": 1}]')
    assert rules.error is None and rules.decide("/x").reserved is True
    assert TdmRepRules.parse(b"[]").decide("/") is None


@pytest.mark.parametrize(
    ("value", "reserved"),
    [("1", True), ("0", False), (" 1 ", True), ('"0"', False), ("1, 1", True), ("yes", True)],
)
def test_tdm_header_values(value, reserved):
    decision = tdm_header_reservation(value, " https://ex.com/p ")
    assert decision.reserved is reserved
    assert decision.policy == "https://ex.com/p"


def test_tdm_header_unparsable_and_absent():
    decision = tdm_header_reservation("yes", None)
    assert decision.policy is None
    assert "'yes'" in decision.rule and "unparsable" in decision.rule
    assert tdm_header_reservation("0, 1", None).reserved is True  # conflicting: restrictive
    assert tdm_header_reservation(None, "https://ex.com/p") is None
    assert tdm_header_reservation("   ", None) is None
    assert tdm_header_reservation("", None) is None


# --- X-Robots-Tag and meta robots ---------------------------------------------------------------


def test_x_robots_agent_scoping():
    assert x_robots_tokens(["otherbot: noai"], TOKEN) == set()
    assert x_robots_tokens(["clipengine-bot: noml"], TOKEN) == {"noml"}
    assert x_robots_tokens(["CLIPENGINE-BOT: NoImageAI, noai"], TOKEN) == {"noimageai", "noai"}
    assert x_robots_tokens(["otherbot: noai, noml, clipengine-bot: noindex"], TOKEN) == {"noindex"}


def test_x_robots_valued_directives_are_not_agents():
    tokens = x_robots_tokens(["unavailable_after: 25 Jun 2030 15:00:00 PST, noai"], TOKEN)
    assert "noai" in tokens
    assert x_robots_tokens(["max-snippet: 20, max-image-preview:large, noimageai"], TOKEN) == {
        "max-snippet",
        "max-image-preview",
        "noimageai",
    }


def test_x_robots_multiple_values_and_scope_resets_per_value():
    values = ["otherbot: noai", "noimageai", "clipengine-bot: noml"]
    assert x_robots_tokens(values, TOKEN) == {"noimageai", "noml"}
    assert x_robots_tokens("noai, noindex", TOKEN) == {"noai", "noindex"}  # lone string
    assert x_robots_tokens([], TOKEN) == set()


def test_meta_robots_tokens():
    metas = [
        ("ROBOTS", "noai, noimageai"),
        ("clipengine-bot", "noml nofollow"),
        ("otherbot", "noindex"),
        ("description", "noai"),
        ("X-Robots-Tag", "otherbot: noarchive, clipengine-bot: noai"),
    ]
    assert meta_robots_tokens(metas, TOKEN) == {"noai", "noimageai", "noml", "nofollow"}
    assert meta_robots_tokens(metas, TOKEN) & OPT_OUT_TOKENS == {"noai", "noimageai", "noml"}
    assert meta_robots_tokens([("robots", "index, follow")], TOKEN) & OPT_OUT_TOKENS == set()


def test_meta_robots_malformed_pairs_skipped():
    metas = [("robots",), None, ("robots", None), (3, "noai"), ["robots", "noml"], "robots"]
    assert meta_robots_tokens(metas, TOKEN) == {"noml"}  # type: ignore[arg-type]
    assert meta_robots_tokens(None, TOKEN) == set()  # type: ignore[arg-type]


# --- binary garbage everywhere ------------------------------------------------------------------


@pytest.mark.parametrize("junk", [GARBAGE, GARBAGE.decode("latin-1"), b"", None, 42, ["x"]])
def test_garbage_never_raises(junk):
    text = junk.decode("latin-1") if isinstance(junk, bytes) else junk
    assert content_usage_refuses(junk) is False
    assert pattern_match_length("/a*b$", text) is None
    assert pattern_match_length(text, "/x") is None
    assert isinstance(select_group_lines(junk, TOKEN), list)
    assert ContentUsageRules.parse(junk, TOKEN).decide("/") is None
    assert AiTxtRules.parse(junk, TOKEN).decide("/x.jpg") is None
    tdm = TdmRepRules.parse(junk)
    assert tdm.decide("/") is None and tdm.error is not None
    assert isinstance(tdm_header_reservation(text, text), TdmDecision | None)
    assert isinstance(x_robots_tokens([junk], TOKEN), set)
    assert isinstance(x_robots_tokens(junk, TOKEN), set)
    assert isinstance(meta_robots_tokens([("robots", text), (text, text)], TOKEN), set)
    assert ContentUsageRules.parse(ROBOTS, junk).decide("/") is not None  # bad token: `*` rules
