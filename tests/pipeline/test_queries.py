import pickle
import random

import pytest

from pipeline.queries import (
    QueryMatcher,
    build_query_list,
    load_query_list,
    normalize,
    read_wordnet_lemmas,
    write_query_list,
)

pytestmark = pytest.mark.timeout(60)

QUERIES = [
    "Cat",
    "hot dog",
    "dog",
    "hot",
    "café",
    "Straße",
    "猫",
    "ケース",
    "iPhone",
    "c++",
    "t-shirt",
    "🐱",
    "ไทย",
    "नमस्ते",
]


@pytest.fixture(scope="module")
def matcher():
    return QueryMatcher(QUERIES)


@pytest.mark.parametrize(
    "caption, expected",
    [
        ("A CAT on a mat", ["Cat"]),  # case folding; the list spelling comes back
        ("concatenate the bobcat", []),  # no match inside a word
        ("Cat!", ["Cat"]),
        ("the cat's toy", ["Cat"]),
        ("cats", []),
        ("my_cat.jpg", ["Cat"]),  # underscore and dot separate words in file-name alt texts
        ("cat5", []),  # digits are word characters
        ("A hot dog stand", ["hot", "hot dog", "dog"]),  # overlapping matches all count
        ("HOT-DOG", ["hot", "hot dog", "dog"]),
        ("hot dogs", ["hot"]),
        ("hot, dog", ["hot", "dog"]),  # punctuation inside breaks a multi-word query
        ("hot \t\n dog", ["hot", "hot dog", "dog"]),  # a whitespace run is one space
        ("dog and cat and dog", ["dog", "Cat"]),  # de-duplicated, order of first occurrence
        ("Café au lait", ["café"]),
        ("Cafe\u0301 au lait", ["café"]),  # decomposed é
        ("a cafe", []),
        ("STRASSE in Berlin", ["Straße"]),  # ß case-folds to ss
        ("die straße", ["Straße"]),
        ("私は猫が好きです", ["猫"]),  # no word boundary needed in Japanese
        ("iPhoneケース", ["iPhone", "ケース"]),
        ("ｉＰｈｏｎｅ", ["iPhone"]),  # full-width Latin folds to ASCII (NFKC)
        ("ภาษาไทยง่าย", ["ไทย"]),
        ("नमस्ते दुनिया", ["नमस्ते"]),  # Devanagari vowel signs stay inside the word
        ("vitamin c", []),  # "c++" needs its "++"
        ("C++ code", ["c++"]),
        ("T-Shirt sale", ["t-shirt"]),
        ("t shirt", []),
        ("I love 🐱s", ["🐱"]),  # no word character: a plain substring
        ("", []),
        ("   ", []),
        (None, []),
    ],
)
def test_match(matcher, caption, expected):
    assert matcher.match(caption) == expected
    assert matcher.match_many([caption]) == [expected]


def test_match_many_agrees_with_match(matcher):
    rng = random.Random(0)
    pieces = [
        "cat",
        "CAT",
        "hot",
        "dog",
        "hot dog",
        "café",
        "ß",
        "strasse",
        "猫",
        "ケース",
        "iphone",
        "c++",
        "vitamin c",
        "t-shirt",
        "🐱",
        "ไทย",
        "x",
        ",",
        "!",
        "\x00",
        "\n",
        "  ",
        "_",
        "é",
        "concatenate",
        "123",
    ]
    captions = [
        "".join(rng.choice(pieces) + rng.choice(["", " ", "-"]) for _ in range(rng.randint(0, 8)))
        for _ in range(400)
    ] + [None, ""]
    assert matcher.match_many(captions) == [matcher.match(c) for c in captions]
    # only-ASCII and only-non-ASCII batches take other paths
    ascii_caps = [c for c in captions if c and c.isascii()]
    assert matcher.match_many(ascii_caps) == [matcher.match(c) for c in ascii_caps]
    other = [c for c in captions if c and not c.isascii()]
    assert matcher.match_many(other) == [matcher.match(c) for c in other]


def test_shared_key_and_plain_matcher():
    m = QueryMatcher(["t-shirt", "T shirt", "shirt"])
    assert m.match("t-shirt") == ["t-shirt", "T shirt", "shirt"]
    assert m.match("a t shirt") == ["T shirt", "shirt"]
    assert m.match_many(["t-shirt", "a t shirt", "no"]) == [
        ["t-shirt", "T shirt", "shirt"],
        ["T shirt", "shirt"],
        [],
    ]


def test_matcher_input_errors():
    with pytest.raises(ValueError, match="at least one query"):
        QueryMatcher([])
    with pytest.raises(TypeError):
        QueryMatcher("cat")
    with pytest.raises(ValueError, match="blank"):
        QueryMatcher(["cat", "  "])
    m = QueryMatcher(["cat", "CAT"])
    assert m.queries == ["cat"] and len(m) == 1
    with pytest.raises(TypeError, match="str"):
        m.match(b"cat")
    with pytest.raises(TypeError, match="caption 1"):
        m.match_many(["cat", 3])


def test_save_load_and_pickle(tmp_path, matcher):
    path = matcher.save(tmp_path / "m.pkl")
    loaded = QueryMatcher.load(path)
    caps = ["a hot dog", "私は猫が好き", "C++ code", "🐱"]
    assert loaded.match_many(caps) == matcher.match_many(caps)
    assert pickle.loads(pickle.dumps(matcher)).match("Cat!") == ["Cat"]
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="not a saved QueryMatcher"):
        QueryMatcher.load(tmp_path / "junk.pkl")
    (tmp_path / "dict.pkl").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match="holds a dict"):
        QueryMatcher.load(tmp_path / "dict.pkl")
    with pytest.raises(FileNotFoundError):
        QueryMatcher.load(tmp_path / "missing.pkl")


def test_normalize():
    assert normalize("  Hot-Dog,  STAND!! ") == "hot dog  stand"
    assert normalize("iPhoneケース") == "iphone ケース"
    assert normalize("Straße") == "strasse"


def test_load_query_list(tmp_path):
    path = tmp_path / "q.txt"
    path.write_text("\ufeff# comment\ncat\n\n  Dog  \n  # indented comment\nCAT\ndog\nhot dog\n")
    assert load_query_list(path) == ["cat", "Dog", "hot dog"]


def test_load_query_list_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_query_list(tmp_path / "missing.txt")
    (tmp_path / "bad.txt").write_bytes(b"cat\n\xff\xfe\n")
    with pytest.raises(ValueError, match="not valid UTF-8"):
        load_query_list(tmp_path / "bad.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n\n   \n")
    with pytest.raises(ValueError, match="no queries"):
        load_query_list(tmp_path / "empty.txt")
    with pytest.raises(ValueError, match="directory"):
        load_query_list(tmp_path)


def test_write_query_list_round_trip(tmp_path):
    queries = ["cat", "hot dog", "café", "猫"]
    path = write_query_list(queries, tmp_path / "sub" / "q.txt")
    assert load_query_list(path) == queries
    with pytest.raises(ValueError, match="'#'"):
        write_query_list(["#tag"], tmp_path / "x.txt")
    with pytest.raises(ValueError, match="blank"):
        write_query_list(["a\nb"], tmp_path / "x.txt")


def _write_wordnet(folder):
    folder.mkdir(parents=True)
    header = "  1 This software and database is being provided to you, the LICENSEE\n"
    (folder / "index.noun").write_text(
        header + "hot_dog n 2 3 @ ~ + 2 1 07697537 10187990\n"
        "a n 1 0 1 0 06831177\nzebra_crossing n 1 1 @ 1 0 03003523\n"
    )
    (folder / "index.verb").write_text(header + "run v 41 5 ! @ ~ * $ 41 34 02092002\n")
    (folder / "index.adj").write_text(header + "1st a 1 0 1 0 02203763\n")


def test_read_wordnet_layouts(tmp_path):
    _write_wordnet(tmp_path / "WordNet-3.0" / "dict")
    lemmas = read_wordnet_lemmas(tmp_path / "WordNet-3.0")
    assert lemmas == ["hot dog", "zebra crossing", "run", "1st"]  # "a" is too short
    _write_wordnet(tmp_path / "nltk_data" / "corpora" / "wordnet")
    assert read_wordnet_lemmas(tmp_path / "nltk_data") == lemmas
    with pytest.raises(FileNotFoundError, match="no WordNet index"):
        read_wordnet_lemmas(tmp_path / "nowhere")


def test_build_query_list(tmp_path):
    base = build_query_list(min_zipf=6.0)
    assert {"the", "of", "and"} <= set(base)
    assert all(q.isalpha() and len(q) >= 2 for q in base)
    assert base == sorted(base) and len(set(base)) == len(base)
    _write_wordnet(tmp_path / "dict")
    with_wn = build_query_list(min_zipf=6.0, wordnet_dir=tmp_path / "dict")
    assert set(with_wn) == set(base) | {"hot dog", "zebra crossing", "run", "1st"}
    top = build_query_list(min_zipf=5.0, max_queries=5)
    assert len(top) == 5 and "the" in top
    assert len(build_query_list(min_zipf=5.0)) > len(base)
    with pytest.raises(ValueError, match="max_queries"):
        build_query_list(max_queries=0)
    with pytest.raises(ValueError, match="empty query list"):
        build_query_list(min_zipf=9.0)
    with pytest.raises(ValueError, match="no word list"):
        build_query_list(lang="xx")


def test_whitespace_inside_queries_and_captions():
    m = QueryMatcher(["rock 'n' roll", "hot  dog", "hot dog"])
    assert m.queries == ["rock 'n' roll", "hot  dog"]  # a whitespace run is one space
    assert m.match("Rock  'n'\tRoll forever") == ["rock 'n' roll"]
    assert m.match("rock n roll") == []
    assert m.match("HOT DOG") == ["hot  dog"]
