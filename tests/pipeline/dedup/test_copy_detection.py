"""The leak check with verification (`--leak-verify orb`) against issue 16's edit list at the
worst setting of each edit, on real pictures that ship with matplotlib (a photograph, an
illustration, a logo): every copy but the known gaps is found and names its original; other
images are not."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from pipeline.dedup.evalsets import hash_eval_sets
from pipeline.dedup.hashes import image_hashes
from pipeline.dedup.leaks import LeakConfig, find_leaks, leak_verify_config
from pipeline.testing.edits import EDITS, composite
from tests.pipeline.dedup.images import scene
from tests.pipeline.dedup.test_verify import smiley

PICTURES = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png")
# The gaps issue 16 still has at the shipped settings (edit@picture): a rotation plus a crop is
# never proposed (the eval variants turn or crop, not both); a wide pad or a screenshot of the
# wide logo keeps few keypoints. (crop+jpeg@1, crop@1, mirror+pad@2 and pad@0 left the list when
# candidates began to be verified within 96 bits, not 44, under a stricter edge check; crop+jpeg@2
# and rotate@2 when the build began to honour the aligned edge check.) This list only shrinks.
KNOWN_MISSES = [
    "pad@1",
    "rotate+crop@0",
    "rotate+crop@1",
    "rotate+crop@2",
    "screenshot@2",
]


def sample_picture(name: str, side: int = 256) -> Image.Image:
    import matplotlib

    path = os.path.join(matplotlib.get_data_path(), "sample_data", name)
    with Image.open(path) as image:
        image.thumbnail((side, side))
        return image.convert("RGBA") if image.mode in ("RGBA", "LA", "P") else image.convert("RGB")


@pytest.fixture(scope="module")
def eval_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("evals") / "real"
    for k, name in enumerate(PICTURES):
        (root / f"c{k}").mkdir(parents=True)
        sample_picture(name).save(root / f"c{k}" / f"{k}.png")
    (root / "smiley").mkdir()
    smiley(0).save(root / "smiley" / "s.png")
    return hash_eval_sets([str(root)])


def _leaks(eval_table, images: dict) -> dict:
    blobs = {}
    for uid, image in images.items():
        buf = io.BytesIO()
        image.convert("RGB").save(buf, "PNG")
        blobs[uid] = buf.getvalue()
    uids = list(images)
    hashes = [image_hashes(images[u]) for u in uids]
    found = find_leaks(
        eval_table,
        uids,
        [h["phash256"] for h in hashes],
        [h["phash256_trim"] for h in hashes],
        LeakConfig(verify=leak_verify_config("orb")),  # --leak-verify orb as shipped
        images=lambda indexes: {i: blobs[uids[i]] for i in indexes},
    )
    return {leak.uid: leak.eval_id for leak in found}


@pytest.mark.timeout(120)
def test_every_edit_at_its_worst_setting_is_found(eval_set):
    copies = {}
    for k, name in enumerate(PICTURES):
        original = composite(sample_picture(name))
        for edit, apply in EDITS.items():
            copies[f"{edit}@{k}"] = apply(original, np.random.default_rng([k, len(copies)]), True)
    found = _leaks(eval_set, copies)
    assert sorted(set(copies) - set(found)) == KNOWN_MISSES
    assert all(found[uid] == f"real/c{uid[-1]}/{uid[-1]}.png" for uid in found)


def test_other_images_and_another_drawing_of_the_same_thing_are_not_copies(eval_set):
    others = {f"scene{s}": scene(s, size=200) for s in range(8)}
    others["smiley_other_artist"] = smiley(1)
    assert _leaks(eval_set, others) == {}
