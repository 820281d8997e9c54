"""The search page: text → image with the checkpoint `pipeline embed` used, and image → image
from a row's stored embedding (`?like=<uid>`). Only kept rows are ever returned
(pipeline.embed.search drops the rest)."""

from manifests.config import ConfigError
from pipeline.serve.data import UID, BadRequest

MAX_K = 200


def _k(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_K:
        raise BadRequest(f"k (results) must be a whole number from 1 to {MAX_K}")
    return int(text)


def search_page(explorer, params) -> str:
    text = params.get("text", "").strip()
    like = params.get("like", "").strip()
    k = _k(params.get("k", "48").strip() or "48")
    if like and not UID.fullmatch(like):
        raise BadRequest("like must be a row's uid (32 hexadecimal characters)")
    values = dict(text=text, like=like, k=k, hits=None, thumbs=[], scores=[], message="")
    if not explorer.view.has_embeddings():
        values["message"] = (
            "This dataset has no embeddings yet: run `pipeline embed DIR --checkpoint CKPT`, "
            "then search here."
        )
        return explorer.page("search.html", "search", "search", **values)
    if text or like:
        try:
            hits = _hits(explorer.searcher(), text, like, k)
        except ConfigError as exc:  # the embeddings and model do not fit, or are missing
            values["message"] = str(exc)
        else:
            rows = [_row(hit) for hit in hits]
            values.update(
                hits=rows,
                thumbs=explorer.thumb_urls(rows),
                scores=[f"cos {hit.score:.3f}" for hit in hits],
            )
    return explorer.page("search.html", "search", f"search: {text or like}", **values)


def _hits(searcher, text: str, like: str, k: int):
    if like:
        vector = searcher.row_vector(like)
        if vector is None:
            raise ConfigError(f"row {like} has no image embedding (not kept, or not embedded)")
        return [hit for hit in searcher.hits(vector, k + 1) if hit.uid != like][:k]
    return searcher.hits(searcher.query_vector(text=text), k)


def _row(hit) -> dict:
    """A search hit as the grid's cards read a row (only kept rows are hits)."""
    return {
        "uid": hit.uid,
        "caption": hit.caption,
        "url": hit.url,
        "status": "kept",
        "error": None,
        "lang": None,
        "clip_score": hit.clip_score,
        "shard": hit.shard,
        "shard_row": hit.shard_row,
        "width": None,
        "part": None,
    }
