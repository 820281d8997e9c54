"""`pipeline search DIR "a red apple"`: a text (or image) query against the image embeddings of a
dataset's stored images that some caption keeps (`pipeline embed` wrote them and their FAISS
index), best first.

The query is embedded with the checkpoint `embed` used (recorded in embeddings/meta.json), so it
lands in the same space; scores are cosines. Hits carry the image's first kept caption and URL
(the `images` view) and their place in the shards, which the HTML page reads thumbnails from."""

import html
import io
import logging
from dataclasses import dataclass
from pathlib import Path

from manifests import storage
from manifests.config import ConfigError
from manifests.layout import DatasetLayout, write_bytes_atomic
from manifests.storage import location
from pipeline.embed import store

log = logging.getLogger(__name__)


@dataclass
class Hit:
    rank: int
    score: float
    uid: str
    caption: str | None
    url: str | None
    shard: str
    shard_row: int
    clip_score: float | None  # the pair's own image-caption cosine: low for a wrong caption


def _query_vector(loaded, text: str | None, image: str | None):
    import numpy as np

    from pipeline.embed.encode import embed_images, embed_texts

    if (text is None) == (image is None):
        raise ConfigError("give a text query or --image FILE (one of them)")
    if text is not None:
        if not text.strip():
            raise ConfigError("the text query is empty")
        return embed_texts(loaded, [text])
    if not location(image).is_file():
        raise ConfigError(f"query image {image} does not exist")
    vector = embed_images(loaded, [location(image).read_bytes()])
    if np.isnan(vector).any():
        raise ConfigError(f"query image {image} could not be decoded")
    return vector


def _images(dataset_dir, places: list[tuple[str, int]]) -> dict[tuple[str, int], tuple]:
    """(first kept caption, its url, its uid, its clip_score) of each stored image at (shard,
    shard_row) that some caption still keeps. By place, not by the shard row's uid: that uid is
    the image's first caption row's, which a later stage (low_clip_score) or a removal may drop
    while sibling captions keep the image (manifests.db's `images` view)."""
    import manifests

    if not places:
        return {}
    con = manifests.open(dataset_dir)
    con.execute("CREATE TEMP TABLE wanted (shard VARCHAR, shard_row BIGINT)")
    con.executemany("INSERT INTO wanted VALUES (?, ?)", places)
    # kept captions only: a row opted out or removed since `embed` ran is never served; the
    # score is the manifest's (the build's, else `embed`'s for the very caption it scored)
    rows = con.execute(
        "SELECT i.shard, i.shard_row, i.captions[1], s.url, s.uid, s.clip_score FROM images i "
        "JOIN wanted USING (shard, shard_row) JOIN samples s ON s.uid = i.caption_uids[1]"
    ).fetchall()
    return {(shard, row): tuple(rest) for shard, row, *rest in rows}


def _withheld(dataset_dir) -> int:
    """Embedded images no caption keeps any more (a recheck opted them out since `embed` ran)."""
    import manifests

    con = manifests.open(dataset_dir)
    return con.execute(
        "SELECT count(*) FROM embeddings e LEFT JOIN images i USING (shard, shard_row) "
        "WHERE i.shard IS NULL"
    ).fetchone()[0]


def _check_same_model(checkpoint: str, meta: dict) -> None:
    """The query must land in the space the embeddings are in: the very checkpoint `embed` used
    (a run's latest.pt is rewritten as training goes on)."""
    from pipeline.embed.encode import checkpoint_digest

    if not location(checkpoint).is_file():
        raise ConfigError(f"checkpoint {checkpoint} does not exist")
    if checkpoint_digest(checkpoint) != meta.get("checkpoint_sha256"):
        raise ConfigError(
            f"{checkpoint} is not the checkpoint the embeddings were made with (its content "
            f"differs from {meta.get('checkpoint')} at embedding time); run "
            "`pipeline embed DIR --checkpoint CKPT --overwrite` first"
        )


def _index_rows(folder: Path):
    import numpy as np

    path = store.index_rows_path(folder)
    return np.load(io.BytesIO(path.read_bytes())) if path.exists() else None


class Searcher:
    """A dataset's embeddings, index and model, loaded once for many queries (the explorer's
    search page keeps one; `search` makes one per call)."""

    def __init__(self, dataset_dir, checkpoint: str | None = None, device: str = "auto"):
        from pipeline.embed import index as faiss_index
        from pipeline.embed.encode import load_model

        self.dataset_dir = dataset_dir
        self.folder = store.embeddings_dir(dataset_dir)
        meta = store.read_meta(self.folder)
        if meta is None or "index" not in meta:
            raise ConfigError(
                f"{dataset_dir} has no embeddings; run `pipeline embed {dataset_dir} "
                "--checkpoint CKPT` first"
            )
        checkpoint = checkpoint or meta["checkpoint"]
        _check_same_model(checkpoint, meta)
        self.loaded = load_model(checkpoint, device)
        try:
            self.index, self.info = faiss_index.load_index(self.folder)
        except faiss_index.IndexFileError as exc:
            raise ConfigError(f"{exc}; run `pipeline embed` again") from None
        self.rows = store.read_ids(self.folder)
        self.row_of = _index_rows(self.folder)
        if self.info.n != (self.rows.num_rows if self.row_of is None else len(self.row_of)):
            raise ConfigError(
                f"{self.folder}: the index does not match the embeddings (an interrupted "
                "`pipeline embed`?); run it again"
            )

    def query_vector(self, text: str | None = None, image: str | None = None):
        return _query_vector(self.loaded, text, image)

    def row_vector(self, uid: str):
        """The stored image embedding of the image of row `uid` ([1, D] float32), or None: by
        its place in the shards, which sibling captions share with the embedded row."""
        import pyarrow.compute as pc

        import manifests

        place = (
            manifests.open(self.dataset_dir)
            .execute("SELECT shard, shard_row FROM samples WHERE uid = ?", [uid])
            .fetchone()
        )
        if place is None or place[0] is None:
            return None
        at = pc.and_(
            pc.equal(self.rows["shard"], place[0]), pc.equal(self.rows["shard_row"], place[1])
        )
        found = self.rows.filter(at)
        if found.num_rows == 0:
            return None
        path = store.part_path(self.folder, found["shard"][0].as_py())
        embedded = found["uid"][0].as_py()  # the shard row's uid, not necessarily `uid`
        table = storage.read_table(
            path, columns=["uid", "image"], filters=pc.field("uid") == embedded
        )
        vector = store.to_matrix(table.column("image"))[:1]
        return None if vector.shape[0] == 0 or not (vector == vector).all() else vector

    def hits(self, query, k: int) -> list[Hit]:
        """The k nearest kept rows to `query` ([1, D]), best first."""
        import numpy as np

        from pipeline.embed import index as faiss_index

        if k < 1:
            raise ConfigError(f"-k must be positive, not {k}")
        # ask for enough neighbours that k remain once rows no longer kept are left out
        withheld = _withheld(self.dataset_dir)
        scores, ids = faiss_index.search(
            self.index, self.info, query, min(k + withheld, self.info.n)
        )
        if self.row_of is not None:
            ids = np.where(ids >= 0, self.row_of[np.maximum(ids, 0)], -1)
        shards, shard_rows = (self.rows[c].to_pylist() for c in ("shard", "shard_row"))
        found = [(float(s), int(i)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0]
        text_of = _images(self.dataset_dir, [(shards[i], shard_rows[i]) for _, i in found])
        found = [(s, i) for s, i in found if (shards[i], shard_rows[i]) in text_of][:k]
        hits = []
        for rank, (score, i) in enumerate(found, start=1):
            caption, url, uid, pair = text_of[shards[i], shard_rows[i]]
            pair = pair if pair is not None and pair == pair else None  # NaN: unscored
            hits.append(Hit(rank, score, uid, caption, url, shards[i], shard_rows[i], pair))
        return hits


def search(
    dataset_dir,
    text: str | None = None,
    image: str | None = None,
    k: int = 20,
    checkpoint: str | None = None,
    device: str = "auto",
) -> list[Hit]:
    if k < 1:
        raise ConfigError(f"-k must be positive, not {k}")
    searcher = Searcher(dataset_dir, checkpoint, device)
    return searcher.hits(searcher.query_vector(text, image), k)


def _thumbnails(dataset_dir, hits: list[Hit], px: int) -> dict[str, str | None]:

    from manifests import schema
    from pipeline.report.thumbs import thumbnail

    layout = DatasetLayout(dataset_dir)
    out: dict[str, str | None] = {}
    by_shard: dict[str, list[Hit]] = {}
    for hit in hits:
        by_shard.setdefault(hit.shard, []).append(hit)
    for shard, group in by_shard.items():
        path = layout.shards / shard
        if not path.exists():
            continue
        names = storage.parquet_file(path).schema_arrow.names
        column = next((c for c in schema.IMAGE_COLUMNS if c in names), None)
        table = storage.read_table(path, columns=[column]).take([h.shard_row for h in group])
        for hit, data in zip(group, table[column].to_pylist(), strict=True):
            out[hit.uid] = thumbnail(data, px) if data else None
    return out


def write_html(dataset_dir, hits: list[Hit], query: str, out, px: int = 192) -> Path:
    """One self-contained page: the query, then a grid of thumbnails with rank, score, caption."""
    thumbs = _thumbnails(dataset_dir, hits, px)
    cards = []
    for hit in hits:
        image = thumbs.get(hit.uid)
        picture = f'<img src="{image}" alt="">' if image else '<div class="missing">no image</div>'
        cards.append(
            f'<figure>{picture}<figcaption><b>#{hit.rank}</b> <span class="score">'
            f"{hit.score:.3f}</span>{_pair(hit)}<br>{html.escape(hit.caption or '')}"
            f'<br><a href="{html.escape(hit.url or "", quote=True)}">'
            f"{html.escape(_short(hit.url or ''))}</a></figcaption></figure>"
        )
    body = "\n".join(cards) or "<p>No results.</p>"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>search: {html.escape(query)}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }}
h1 {{ font-size: 20px; }} .sub {{ color: #666; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax({px + 16}px, 1fr));
         gap: 14px; }}
figure {{ margin: 0; padding: 8px; border: 1px solid #ddd; border-radius: 6px; }}
figure img, .missing {{ width: {px}px; height: {px}px; object-fit: contain; background: #f6f6f6;
                        display: block; }}
.missing {{ display: flex; align-items: center; justify-content: center; color: #999; }}
figcaption {{ margin-top: 6px; word-break: break-word; }} .score {{ color: #0a6; }}
.pair {{ color: #888; font-size: 12px; }}
a {{ color: #36c; font-size: 12px; }}
</style></head><body>
<h1>{html.escape(query)}</h1>
<p class="sub">{len(hits)} results from {html.escape(str(dataset_dir))}, best first.
Green: cosine of the query and the image embeddings; grey: the pair's own clip_score (image vs
its caption; low for a caption that does not describe the image).</p>
<div class="grid">
{body}
</div></body></html>
"""
    return write_bytes_atomic(page.encode("utf-8"), location(out))


def _pair(hit: Hit) -> str:
    if hit.clip_score is None:
        return ""
    return f' <span class="pair" title="clip_score of the pair">pair {hit.clip_score:.3f}</span>'


def _short(url: str, limit: int = 60) -> str:
    return url if len(url) <= limit else url[: limit - 1] + "…"
