"""The leak check's second candidate source: embedding neighbours, verified like hash candidates."""

import numpy as np
import pytest

from manifests.config import ConfigError
from pipeline.dedup.decide import DedupConfig, decide, leak_config
from pipeline.dedup.hashes import image_hashes
from pipeline.dedup.leakembed import (
    EMBED_FILE,
    MIN_COSINE,
    EmbedConfig,
    EvalEmbeddings,
    embedding_candidates,
    write_eval_embeddings,
)
from pipeline.dedup.leaks import LeakConfig, leak_reason
from pipeline.dedup.verify import VerifyConfig
from tests.pipeline.dedup.images import scene
from tests.pipeline.dedup.test_leakverify import leaks_of, pool
from tests.pipeline.dedup.test_verify import worst_copies
from tests.trainer.evaluation.helpers import save_checkpoint

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return str(save_checkpoint(tmp_path_factory.mktemp("model") / "m.pt"))


def turned_crop(image):
    """Turned 8 degrees, then cut to its top-left 80%: no eval variant turns and crops at once,
    so the hash candidates do not reach it even at 96 bits (issue 16's rotation + crop)."""
    from PIL import Image

    turned = image.convert("RGB").rotate(8, Image.BICUBIC, fillcolor=(255, 255, 255))
    w, h = turned.size
    return turned.crop((0, 0, round(0.8 * w), round(0.8 * h)))


def _config(checkpoint, min_cosine=-1.0, **kw) -> LeakConfig:
    # min_cosine -1: every neighbour is proposed, whatever this untrained model thinks of it,
    # so the test shows that verification, not the embeddings, decides.
    embed = EmbedConfig(checkpoint, min_cosine=min_cosine, device="cpu", **kw)
    return LeakConfig(verify=VerifyConfig(), embed=embed)


def test_embedding_neighbours_reach_the_copies_the_hash_candidates_miss(evals, checkpoint):
    _, eval_table = evals
    crops = {f"crop@{s}": turned_crop(scene(s)) for s in (1, 2, 3)}
    others = {f"other{s}": scene(s) for s in range(20, 32)}  # same generator, not copies
    rows = pool(crops | others)
    hashes_only = leaks_of(eval_table, rows, LeakConfig(verify=VerifyConfig()))
    assert not set(crops) & set(hashes_only)  # turned and cropped: no hash candidate
    found = leaks_of(eval_table, rows, _config(checkpoint))
    assert set(found) == set(crops)  # every other image was proposed too, and verified out
    for uid, leak in found.items():
        assert leak.eval_id == f"pets/c{uid[-1]}/s{uid[-1]}.png"
        assert leak.kind == "orb" and leak.inliers >= VerifyConfig().min_inliers
        assert -1.0 <= leak.cosine <= 1.0 and 0 <= leak.distance <= 256
        assert f"proposed by the image embeddings (cosine {leak.cosine:.3f})" in leak_reason(leak)
    # Nothing above a cosine of 1: the embeddings propose nothing, the hashes' answer stands.
    assert leaks_of(eval_table, rows, _config(checkpoint, min_cosine=1.0)) == hashes_only


def test_candidates_are_the_nearest_eval_images_above_the_cosine(evals, checkpoint):
    _, eval_table = evals
    store = EvalEmbeddings(eval_table, EmbedConfig(checkpoint, neighbours=2, device="cpu"))
    index, rows = store.index()
    assert sorted(rows.tolist()) == [0, 1, 2] and index.ntotal == 3  # broken.png: no embedding
    data = pool({"a": scene(1), "b": scene(2)})["image"] + [b"not an image"]
    found = embedding_candidates(store, lambda ix: {i: data[i] for i in ix}, [0, 1, 2])
    assert 2 not in found  # an undecodable pool image proposes nothing
    for i in (0, 1):
        near = found.get(i, [])
        assert len(near) <= 2 and [c for _, c in near] == sorted((c for _, c in near), reverse=True)
        assert all(c >= store.config.min_cosine for _, c in near)
    same = found[0][0]
    assert same[0] == 0 and same[1] == pytest.approx(1.0, abs=1e-4)  # scene 1 is eval row 0


def test_stored_eval_embeddings_give_the_same_leaks(evals, checkpoint, tmp_path, monkeypatch):
    _, eval_table = evals
    config = _config(checkpoint)
    rows = pool({"crop": worst_copies(scene(2))["crop_20_corner"], "other": scene(40)})
    write_eval_embeddings(eval_table, tmp_path, config.embed)
    stored = EvalEmbeddings(eval_table, config.embed, tmp_path)
    computed = EvalEmbeddings(eval_table, config.embed)
    assert stored.index()[1].tolist() == computed.index()[1].tolist()
    a, b = (s.index()[0].reconstruct_n(0, 3) for s in (stored, computed))
    assert np.allclose(a, b, atol=1e-6)
    from pipeline.dedup.leaks import find_leaks

    data = rows["image"]
    got = find_leaks(
        eval_table,
        rows["uid"],
        rows["phash256"],
        rows["phash256_trim"],
        config,
        images=lambda ix: {i: data[i] for i in ix},
        eval_embeddings=stored,
    )
    assert got == list(leaks_of(eval_table, rows, config).values()) and len(got) == 1
    path = tmp_path / EMBED_FILE
    before = path.stat().st_mtime_ns
    import pipeline.embed.encode as encode

    monkeypatch.setattr(encode, "load_model", lambda *a: pytest.fail("embedded again"))
    write_eval_embeddings(eval_table, tmp_path, config.embed)  # same checkpoint and images
    assert path.stat().st_mtime_ns == before


def test_decide_with_the_build_flags_and_their_errors(evals, checkpoint, tmp_path):
    folder, eval_table = evals
    crop = turned_crop(scene(1))
    rows = pool({"crop": crop, "other": scene(50)})
    rows["width"], rows["height"] = [102, 128], [102, 128]
    rows["phash"] = [image_hashes(crop)["phash"], image_hashes(scene(50))["phash"]]
    flags = {"eval_set": [folder], "leak_verify": "orb", "leak_embed": checkpoint}
    on, leaks = decide(rows, eval_table, DedupConfig(**flags, leak_embed_min_cosine=-1.0))
    assert set(on) == {"crop"} and on["crop"]["leak_of"] == "pets/c1/s1.png"
    assert "proposed by the image embeddings" in on["crop"]["error"]
    embed = leak_config(DedupConfig(**flags)).embed
    assert embed.checkpoint == checkpoint and embed.min_cosine == 0.7
    assert DedupConfig().leak_embed_min_cosine == MIN_COSINE  # written out: no numpy at --help
    with pytest.raises(ConfigError, match="--leak-embed needs --leak-verify"):
        DedupConfig(eval_set=[folder], leak_embed=checkpoint)
    with pytest.raises(ConfigError, match="no such checkpoint file"):
        DedupConfig(**{**flags, "leak_embed": str(tmp_path / "missing.pt")})
    with pytest.raises(ConfigError, match="leak-embed-min-cosine"):
        DedupConfig(**flags, leak_embed_min_cosine=1.5)
    with pytest.raises(ValueError, match="need the verification stage"):
        LeakConfig(embed=EmbedConfig(checkpoint))
    for bad in ({"min_cosine": "high"}, {"neighbours": 0}, {"batch_size": True}):
        with pytest.raises(ValueError, match="must be"):
            EmbedConfig(checkpoint, **bad)


def test_a_checkpoint_rewritten_after_the_eval_embeddings_is_an_error(evals, tmp_path):
    _, eval_table = evals
    path = save_checkpoint(tmp_path / "m.pt")
    config = EmbedConfig(str(path), device="cpu")
    write_eval_embeddings(eval_table, tmp_path, config)
    stored = EvalEmbeddings(eval_table, config, tmp_path)
    assert stored.index()[0].ntotal == 3
    save_checkpoint(path, seed=1)  # another model under the same name
    with pytest.raises(ConfigError, match="changed since this build embedded its eval sets"):
        EvalEmbeddings(eval_table, config, tmp_path).model()


def test_the_model_loads_once_per_process(evals, checkpoint, monkeypatch):
    import pipeline.dedup.leakembed as leakembed
    import pipeline.embed.encode as encode

    _, eval_table = evals
    leakembed._MODELS.clear()
    loads, real = [], encode.load_model
    monkeypatch.setattr(encode, "load_model", lambda *a: loads.append(a) or real(*a))
    config = _config(checkpoint)
    rows = pool({"crop": worst_copies(scene(3))["crop_20_corner"]})
    for _ in range(3):  # three tasks of one worker process
        leaks_of(eval_table, rows, config)
    assert len(loads) == 1


def test_eval_images_that_all_fail_to_embed_are_an_error(tmp_path, checkpoint):
    from pipeline.dedup.evalsets import hash_eval_sets
    from tests.pipeline.dedup.test_leaks import make_eval_set

    folder = make_eval_set(tmp_path, "one", {"c/a.png": scene(5)})
    table = hash_eval_sets([folder])
    (tmp_path / "one" / "c" / "a.png").write_bytes(b"gone since it was hashed")
    with pytest.raises(ConfigError, match="none of the 1 eval images could be embedded"):
        write_eval_embeddings(table, tmp_path, EmbedConfig(checkpoint, device="cpu"))
