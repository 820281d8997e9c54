"""The query list and caption matching of CLIP / MetaCLIP curation (arXiv 2309.16671).

A query matches a caption when its case-folded form occurs in the case-folded caption as whole
words (the characters just outside are not word characters). Scripts written without spaces (Han,
kana, Thai, Lao, Khmer, Myanmar, Tibetan, ...) need no boundary next to their characters.

How: captions and queries get the same normalisation (`normalize`): NFKC and case folding,
whitespace runs as one space, every other non-word character (underscore too: alt texts are often
file names) as a space, a space between spaced and no-space scripts. Each query is then one key
of an Aho-Corasick automaton, padded with a space on each side that needs a word boundary, so every
hit on the padded caption is a real match with no per-hit check in Python; overlapping hits count.
A query with characters the normalisation drops ("c++") must also occur as written (case-folded),
so "c++" does not match "vitamin c"; one with no word character (an emoji) is a plain substring.
"""

from __future__ import annotations

import functools
import itertools
import logging
import pickle
import re
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

from manifests.storage import cached_local, location

logger = logging.getLogger(__name__)

# Scripts written without spaces between words: no word boundary is needed next to them.
_NOSPACE_RANGES = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x0F00, 0x0FFF),  # Tibetan
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x19E0, 0x19FF),  # Khmer symbols
    (0x2E80, 0x2FDF),  # CJK radicals, Kangxi radicals
    (0x3005, 0x3007),  # 々 〆 〇
    (0x3021, 0x3029),  # Hangzhou numerals
    (0x3031, 0x3035),  # kana repeat marks
    (0x3038, 0x303C),
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3100, 0x312F),  # Bopomofo
    (0x31A0, 0x31FF),  # Bopomofo extended, Katakana phonetic extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xA000, 0xA4CF),  # Yi
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF66, 0xFF9F),  # halfwidth Katakana (NFKC folds most of them)
    (0x1B000, 0x1B16F),  # kana supplement / extended
    (0x20000, 0x3134F),  # CJK extensions B-G
)
_NOSPACE_CLASS = "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in _NOSPACE_RANGES)
_NOSPACE_RE = re.compile(f"[{_NOSPACE_CLASS}]")
# ASCII bytes -> themselves for [a-z0-9], else a space (NUL kept in the batch table: it
# separates captions there).
_ASCII_TABLE = bytes(c if 97 <= c <= 122 or 48 <= c <= 57 else 32 for c in range(256))
_ASCII_BATCH_TABLE = bytes(
    c if 97 <= c <= 122 or 48 <= c <= 57 or c == 0 else 32 for c in range(256)
)
# Between a spaced-script word character (\w but not "_" and not no-space) and a no-space one.
_SCRIPT_GAP_RE = re.compile(
    f"(?<=[^\\W_])(?<![{_NOSPACE_CLASS}])(?=[{_NOSPACE_CLASS}])"
    f"|(?<=[{_NOSPACE_CLASS}])(?=[^\\W_])(?![{_NOSPACE_CLASS}])"
)


@functools.cache
def _nonword_re() -> re.Pattern:
    """One non-word character: "_" or neither alphanumeric nor a combining mark (\\w leaves out
    marks, which would split Thai or Devanagari words). Scans planes 0, 1, 14 once (~0.05 s)."""
    marks, start = [], None
    for cp in (*range(0x20000), *range(0xE0000, 0xE1000), 0x110000):
        is_mark = cp < 0x110000 and unicodedata.category(chr(cp))[0] == "M"
        if is_mark and start is None:
            start = cp
        elif not is_mark and start is not None:
            marks.append(f"\\U{start:08x}-\\U{cp - 1:08x}")
            start = None
    return re.compile(f"[^\\w{''.join(marks)}]|_")


def normalize(text: str) -> str:
    """The matching form of a text: NFKC, case-folded, whitespace runs as one space, every other
    non-word character as a space, a space between spaced and no-space scripts."""
    if text.isascii():
        return b" ".join(text.lower().encode().split()).translate(_ASCII_TABLE).decode().strip()
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    spaced = _nonword_re().sub(" ", " ".join(folded.split()))
    return _SCRIPT_GAP_RE.sub(" ", spaced).strip()


def _automaton_text(texts: list[str]):
    """(" seg0 \\n seg1 \\n ... ", newline positions, text index of each segment): the
    normalised texts in one string for one automaton pass; ASCII texts are normalised together."""
    import numpy as np

    ascii_idx = [i for i, t in enumerate(texts) if t.isascii()]
    other_idx = [i for i, t in enumerate(texts) if not t.isascii()]
    pieces, newlines, offset = [], [], 0
    if ascii_idx:
        joined = "\x00".join(texts[i] for i in ascii_idx).lower().encode()
        if joined.count(b"\x00") != len(ascii_idx) - 1:  # a text holds NUL itself
            joined = b"\x00".join(
                texts[i].lower().encode().replace(b"\x00", b" ") for i in ascii_idx
            )
        block = b" " + b" ".join(joined.split()).translate(_ASCII_BATCH_TABLE).replace(
            b"\x00", b" \n "
        )
        block += b" \n"  # every segment ends with a newline
        newlines.append(np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10))
        pieces.append(block.decode())
        offset = len(block)
    if other_idx:
        segments = [f" {normalize(texts[i])} \n" for i in other_idx]
        ends = np.cumsum(np.fromiter(map(len, segments), np.int64, count=len(segments)))
        newlines.append(offset + ends - 1)
        pieces.extend(segments)
    return "".join(pieces), np.concatenate(newlines), ascii_idx + other_idx


def _casefold(text: str) -> str:
    """NFKC, case-folded, whitespace runs as one space: the form a query must occur in."""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return " ".join(text.lower().split())


def load_query_list(path: str | Path) -> list[str]:
    """Queries of a UTF-8 file, one a line; blank and '#' lines skipped, case-folded duplicates
    dropped (the first spelling is kept)."""
    from manifests.storage import location

    path = location(path)
    try:
        if path.is_dir():
            raise IsADirectoryError(path)
        text = path.read_bytes().decode("utf-8-sig")  # a BOM is not part of the first query
    except FileNotFoundError:
        raise FileNotFoundError(f"query list not found: {path}") from None
    except IsADirectoryError:
        raise ValueError(f"query list is a directory, not a file: {path}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"query list {path} is not valid UTF-8 ({exc.reason} at byte {exc.start})"
        ) from None
    queries = dedupe_queries(
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    if not queries:
        raise ValueError(f"query list {path} has no queries (only blank or '#' lines)")
    return queries


def dedupe_queries(queries: Iterable[str]) -> list[str]:
    """Queries without case-folded duplicates, first spelling kept, in input order."""
    seen: set[str] = set()
    out = []
    for query in queries:
        if not isinstance(query, str):
            raise TypeError(f"a query must be a str, not {type(query).__name__}: {query!r}")
        folded = _casefold(query)
        if folded not in seen:
            seen.add(folded)
            out.append(query)
    return out


def write_query_list(queries: Iterable[str], path: str | Path) -> Path:
    """Write queries one a line (UTF-8), atomically; `load_query_list` reads back the same list."""
    from manifests.layout import write_bytes_atomic

    lines = []
    for query in queries:
        if not isinstance(query, str):
            raise TypeError(f"a query must be a str, not {type(query).__name__}: {query!r}")
        stripped = query.strip()
        if not stripped or stripped.startswith("#") or "\n" in query or "\r" in query:
            raise ValueError(
                f"query {query!r} cannot be written: it is blank, starts with '#' "
                "(a comment line) or holds a line break"
            )
        lines.append(stripped)
    header = f"# query list: {len(lines)} queries, one a line\n"
    return write_bytes_atomic(
        (header + "".join(f"{q}\n" for q in lines)).encode("utf-8"), location(path)
    )


class QueryMatcher:
    """Word-bounded, case-insensitive matching of many queries against captions.

    `match(caption)` returns the matched queries in their list spelling, de-duplicated, in order
    of first occurrence in the caption. Picklable (ships to Ray workers with its automaton).
    """

    def __init__(self, queries: Sequence[str]):
        import numpy as np

        if isinstance(queries, str):
            raise TypeError("QueryMatcher takes a list of queries, not one string")
        self.queries: list[str] = dedupe_queries(queries)
        if not self.queries:
            raise ValueError("QueryMatcher needs at least one query")
        # key -> group id; groups[g] = query ids sharing that key ("t-shirt" and "t shirt").
        groups: dict[str, list[int]] = {}
        raw: dict[str, list[int]] = {}  # queries with no word character: plain substrings
        self._verify: dict[int, str] = {}  # query id -> case-folded form that must also occur
        for qid, query in enumerate(self.queries):
            if not isinstance(query, str) or not query.strip():
                raise ValueError(f"query {qid} is blank or not a string: {query!r}")
            folded, norm = _casefold(query), normalize(query)
            if not norm:
                raw.setdefault(folded, []).append(qid)
                continue
            if norm != folded:
                self._verify[qid] = folded
            left = "" if _NOSPACE_RE.match(norm[0]) else " "
            right = "" if _NOSPACE_RE.match(norm[-1]) else " "
            groups.setdefault(f"{left}{norm}{right}", []).append(qid)
        self._groups: list[tuple[int, ...]] = [tuple(ids) for ids in groups.values()]
        self._automaton = _build_automaton(groups)
        self._raw_groups: list[tuple[int, ...]] = [tuple(ids) for ids in raw.values()]
        self._raw_automaton = _build_automaton(raw) if raw else None
        # For match_many: the query of each single-query key; keys shared by several queries or
        # whose queries need the substring check go through `match`, one caption at a time.
        self._first = np.array([ids[0] for ids in self._groups], dtype=np.int64)
        self._slow = np.array([len(ids) > 1 or ids[0] in self._verify for ids in self._groups])
        self._any_slow = bool(self._slow.any())
        if raw:
            logger.info("%d queries have no word character; matched as plain substrings", len(raw))

    def __len__(self) -> int:
        return len(self.queries)

    def match(self, caption: str | None) -> list[str]:
        """Matched queries of one caption; [] for an empty or missing caption."""
        if not caption:
            return []
        if not isinstance(caption, str):
            raise TypeError(f"a caption must be a str, not {type(caption).__name__}")
        groups, queries = self._groups, self.queries
        # Hits come in order of where they end; a query id belongs to one group only, so
        # unique groups give unique ids.
        hits = dict.fromkeys(g for _, g in self._automaton.iter(f" {normalize(caption)} "))
        if not self._verify and self._raw_automaton is None:
            return [queries[qid] for g in hits for qid in groups[g]]
        ids = self._checked(caption, [qid for g in hits for qid in groups[g]])
        return [queries[qid] for qid in dict.fromkeys(ids)]

    def _checked(self, caption: str, ids: list[int]) -> list[int]:
        """Drop hits whose full case-folded query is not in the caption; add plain-substring hits."""
        folded = None
        if self._verify:
            kept = []
            for qid in ids:
                need = self._verify.get(qid)
                if need is not None:
                    folded = _casefold(caption) if folded is None else folded
                    if need not in folded:
                        continue
                kept.append(qid)
            ids = kept
        if self._raw_automaton is not None:
            folded = _casefold(caption) if folded is None else folded
            # Plain-substring queries follow the word-bounded ones (two automata, two orders).
            ids += [qid for _, g in self._raw_automaton.iter(folded) for qid in self._raw_groups[g]]
        return ids

    def match_many(self, captions: Iterable[str | None]) -> list[list[str]]:
        """`match` of each caption, batched: one automaton pass over all captions at once."""
        import numpy as np

        captions = list(captions)
        todo = [i for i, c in enumerate(captions) if c]
        for i in todo:
            if not isinstance(captions[i], str):
                raise TypeError(f"caption {i} is a {type(captions[i]).__name__}, not a str")
        out: list[list[str]] = [[] for _ in captions]
        if not todo:
            return out
        text, newlines, order = _automaton_text([captions[i] for i in todo])
        todo = [todo[k] for k in order]
        flat = np.fromiter(itertools.chain.from_iterable(self._automaton.iter(text)), np.int64)
        seg, gid = np.searchsorted(newlines, flat[0::2]), flat[1::2]
        _, first = np.unique(seg * len(self._groups) + gid, return_index=True)
        first.sort()  # first hit of each (caption, key), in order of occurrence
        seg, gid = seg[first], gid[first]
        slow = set(seg[self._slow[gid]].tolist()) if self._any_slow else set()
        if self._raw_automaton is not None:
            raw = self._raw_automaton
            slow.update(
                k for k, i in enumerate(todo) if any(True for _ in raw.iter(_casefold(captions[i])))
            )
        if slow:
            fast = ~np.isin(seg, np.fromiter(slow, np.int64))
            seg, gid = seg[fast], gid[fast]
        names = [self.queries[q] for q in self._first[gid].tolist()]
        bounds = np.concatenate([[0], np.cumsum(np.bincount(seg, minlength=len(todo)))]).tolist()
        for k, i in enumerate(todo):
            out[i] = self.match(captions[i]) if k in slow else names[bounds[k] : bounds[k + 1]]
        return out

    def save(self, path: str | Path) -> Path:
        """Pickle the built matcher (automaton included) atomically; `QueryMatcher.load` reads it."""
        from manifests.layout import write_bytes_atomic

        return write_bytes_atomic(
            pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL), location(path)
        )

    @classmethod
    def load(cls, path: str | Path) -> QueryMatcher:
        """A matcher saved by `save` (a pickle: load only files this project wrote)."""
        try:
            with open(cached_local(path), "rb") as fh:
                matcher = pickle.load(fh)
        except FileNotFoundError:
            raise FileNotFoundError(f"saved query matcher not found: {path}") from None
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
            raise ValueError(f"{path} is not a saved QueryMatcher: {exc}") from None
        if not isinstance(matcher, cls):
            raise ValueError(f"{path} holds a {type(matcher).__name__}, not a QueryMatcher")
        return matcher


def _build_automaton(groups: dict[str, list[int]]):
    import ahocorasick

    automaton = ahocorasick.Automaton(ahocorasick.STORE_INTS)
    for gid, key in enumerate(groups):
        automaton.add_word(key, gid)
    automaton.make_automaton()
    return automaton


def build_query_list(
    min_zipf: float = 3.0,
    lang: str = "en",
    wordnet_dir: str | Path | None = None,
    max_queries: int | None = None,
) -> list[str]:
    """A CLIP-style query list: `wordfreq` words of `lang` with Zipf frequency >= `min_zipf`
    (alphabetic, 2+ characters), plus WordNet lemma names when `wordnet_dir` is given.

    With `max_queries`, the most frequent queries (by wordfreq Zipf frequency) are kept. The result
    is sorted (case-folded, then as written) and free of case-folded duplicates.
    """
    import wordfreq

    if max_queries is not None and max_queries < 1:
        raise ValueError(f"max_queries must be >= 1 or None, not {max_queries}")
    try:
        words = wordfreq.iter_wordlist(lang, wordlist="best")
        candidates = []
        for word in words:  # most frequent first: stop at the threshold
            if wordfreq.zipf_frequency(word, lang) < min_zipf:
                break
            if len(word) >= 2 and word.isalpha():
                candidates.append(word)
    except LookupError as exc:
        raise ValueError(f"wordfreq has no word list for language {lang!r}: {exc}") from None
    if wordnet_dir is not None:
        candidates.extend(read_wordnet_lemmas(wordnet_dir))
    queries = dedupe_queries(candidates)
    if not queries:
        raise ValueError(f"no {lang!r} word reaches Zipf frequency {min_zipf}: empty query list")
    if max_queries is not None and len(queries) > max_queries:
        zipf = {q: wordfreq.zipf_frequency(q, lang) for q in queries}
        queries = sorted(queries, key=lambda q: (-zipf[q], _casefold(q), q))[:max_queries]
    return sorted(queries, key=lambda q: (_casefold(q), q))


_WORDNET_INDEXES = ("index.noun", "index.verb", "index.adj", "index.adv")


def find_wordnet_dir(path: str | Path) -> Path:
    """The folder holding WordNet's index.* files: `path` itself, `path/dict` (a WordNet
    release), or `path/corpora/wordnet` / `path/wordnet` (nltk_data)."""
    path = Path(path)
    for candidate in (path, path / "dict", path / "corpora" / "wordnet", path / "wordnet"):
        if any((candidate / name).is_file() for name in _WORDNET_INDEXES):
            return candidate
    raise FileNotFoundError(
        f"no WordNet index files ({', '.join(_WORDNET_INDEXES)}) in {path}, {path / 'dict'} "
        f"or {path / 'corpora' / 'wordnet'}"
    )


def read_wordnet_lemmas(wordnet_dir: str | Path) -> list[str]:
    """Lemma names of WordNet's index files (underscores read as spaces), in file order."""
    folder = find_wordnet_dir(wordnet_dir)
    lemmas = []
    for name in _WORDNET_INDEXES:
        index = folder / name
        if not index.is_file():
            continue
        with open(index, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.strip() or line[0].isspace():  # the license header is indented
                    continue
                lemma = line.split(None, 1)[0].replace("_", " ").strip()
                if len(lemma) >= 2 and any(ch.isalpha() for ch in lemma):
                    lemmas.append(lemma)
    logger.info("read %d WordNet lemmas from %s", len(lemmas), folder)
    return lemmas
