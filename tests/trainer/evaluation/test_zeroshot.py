import math

import open_clip
import pytest
import torch

import trainer.models as models
from manifests.config import ConfigError
from manifests.evalsets import load_eval_set
from tests.trainer.evaluation.helpers import (
    IDENTITY,
    ColourEncoder,
    as_loaded,
    solid,
    write_image_folder,
)
from trainer.evaluation.errors import EvalError
from trainer.evaluation.templates import BUILTIN, load_templates
from trainer.evaluation.zeroshot import (
    class_embeddings,
    classification_metrics,
    evaluate_zero_shot,
    run_zero_shot,
)
from trainer.inference import make_preprocess


def test_ensemble_is_normalised_mean_of_normalised_template_embeddings():
    enc = ColourEncoder(
        {"a cat": (3, 4, 0), "b cat": (0, 0, 2), "a dog": (1, 0, 0), "b dog": (1, 0, 0)}
    )
    emb = class_embeddings(as_loaded(enc), ["cat", "dog"], ["a {}", "b {}"])
    # cat: normalised (0.6, 0.8, 0) and (0, 0, 1); mean (0.3, 0.4, 0.5), norm sqrt(0.5)
    s = math.sqrt(0.5)
    assert torch.allclose(emb[0], torch.tensor([0.3 / s, 0.4 / s, 0.5 / s]), atol=1e-6)
    assert torch.allclose(emb[1], torch.tensor([1.0, 0.0, 0.0]))
    # averaging before normalising would weigh the longer (3, 4, 0) more: not what CLIP does
    assert not torch.allclose(
        emb[0], torch.nn.functional.normalize(torch.tensor([3.0, 4, 2]), dim=0)
    )


def test_metrics_by_hand_with_top_k_capped():
    # 4 images, 6 classes; the rank of each target is set by hand.
    scores = torch.tensor(
        [
            [9, 1, 2, 3, 4, 5],  # target 0 ranked 1st
            [9, 8, 1, 2, 3, 4],  # target 0 ranked 1st
            [1, 9, 8, 7, 6, 5],  # target 0 ranked 6th: top-1 and top-5 miss
            [1, 9, 2, 3, 4, 5],  # target 1 ranked 1st
        ],
        dtype=torch.float,
    )
    targets = torch.tensor([0, 0, 0, 1])
    m = classification_metrics(scores, targets)
    assert m["top1"] == pytest.approx(0.75) and m["top5"] == pytest.approx(0.75)
    assert m["mean_per_class_recall"] == pytest.approx((2 / 3 + 1) / 2)  # classes 2..5: no images
    # target 2 of image 2 ranks 2nd: a top-5 hit, a top-1 miss
    m2 = classification_metrics(scores, torch.tensor([0, 0, 2, 1]))
    assert (m2["top1"], m2["top5"]) == (pytest.approx(0.75), pytest.approx(1.0))
    # 3 classes: top-5 is top-3, every image a hit
    assert classification_metrics(scores[:, :3], torch.tensor([0, 0, 0, 1]))["top5"] == 1.0


def test_zero_shot_on_an_image_folder_with_known_embeddings(tmp_path):
    root = write_image_folder(
        tmp_path / "colours",
        {
            "red": [solid((255, 0, 0)), solid((255, 128, 0))],  # orange: still closest to red
            "green": [solid((0, 255, 0)), solid((0, 0, 200))],  # dark blue filed under green
            "deep_blue": [solid((0, 0, 255))],  # label "deep blue"
        },
    )
    enc = ColourEncoder({"red": (1, 0, 0), "green": (0, 1, 0), "deep blue": (0, 0, 1)})
    eval_set = load_eval_set(root)
    assert eval_set.labels == ["deep blue", "green", "red"]  # sorted folder names
    run = run_zero_shot(as_loaded(enc), eval_set, ("{}",))
    assert run.metrics["top1"] == pytest.approx(4 / 5)
    assert run.metrics["mean_per_class_recall"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert run.metrics["top5"] == 1.0  # 3 classes
    assert run.top1_hits.tolist() == [True, True, False, True, True]  # deep_blue, green x2, red x2
    out = evaluate_zero_shot(enc, enc.tokenizer, IDENTITY, [root], "cpu", templates=["{}"])
    assert out == {
        "colours": {
            **{k: run.metrics[k] for k in ("top1", "top5")},
            "mean_per_class_recall": run.metrics["mean_per_class_recall"],
            "n_images": 5,
        }
    }


def test_unreadable_image_is_skipped_and_counted(tmp_path):
    root = write_image_folder(
        tmp_path / "s", {"red": [solid((255, 0, 0))], "green": [solid((0, 255, 0))]}
    )
    (root / "red" / "broken.png").write_bytes(b"not a png")
    enc = ColourEncoder({"red": (1, 0, 0), "green": (0, 1, 0)})
    run = run_zero_shot(as_loaded(enc), load_eval_set(root), ("{}",))
    assert run.metrics["n_images"] == 2 and run.metrics["n_unreadable"] == 1
    assert run.metrics["top1"] == 1.0


def test_class_embeddings_match_open_clip_on_a_real_model():
    model = models.create("clip-nano").eval()
    tok = models.tokenizer("clip-nano")
    labels, templates = ["red circle", "blue square", "cross"], load_templates("imagenet7")
    ours = class_embeddings(as_loaded(model, tok), labels, templates)
    theirs = open_clip.build_zero_shot_classifier(model, tok, labels, templates, device="cpu")
    assert torch.allclose(ours, theirs.T, atol=1e-5)


def test_evaluate_zero_shot_restores_training_mode(tmp_path):
    root = write_image_folder(
        tmp_path / "s", {"red": [solid((255, 0, 0))], "green": [solid((0, 255, 0))]}
    )
    model = models.create("clip-nano").train()
    out = evaluate_zero_shot(
        model,
        models.tokenizer("clip-nano"),
        make_preprocess(model),
        [root],
        "cpu",
        templates="generic",
    )
    assert model.training and set(out["s"]) == {"top1", "top5", "mean_per_class_recall", "n_images"}
    assert out["s"]["top5"] == 1.0


def test_templates_builtin_and_file(tmp_path):
    imagenet = load_templates("imagenet80")
    assert len(imagenet) == 80 and len(set(imagenet)) == 80
    assert "a bad photo of a {}." in imagenet and "itap of my {}." in imagenet
    assert all(t.count("{}") == 1 for name in BUILTIN for t in load_templates(name))
    f = tmp_path / "t.txt"
    f.write_text("# mine\na sketch of a {}.\n\n{} emoji\n")
    assert load_templates(str(f)) == ("a sketch of a {}.", "{} emoji")
    f.write_text("no placeholder\n")
    with pytest.raises(EvalError, match="exactly one"):
        load_templates(str(f))
    f.write_text("a {} with {braces}\n")
    with pytest.raises(EvalError, match="braces"):
        load_templates(str(f))
    with pytest.raises(EvalError, match="neither a built-in"):
        load_templates("imagenet81")


def test_flat_metrics_for_the_training_log():
    from trainer.evaluation.zeroshot import flat_metrics

    flat = flat_metrics(
        {"pets": {"top1": 0.5, "top5": 1.0, "mean_per_class_recall": 0.25, "n_images": 4}}
    )
    assert flat == {
        "zeroshot/pets/top1": 0.5,
        "zeroshot/pets/top5": 1.0,
        "zeroshot/pets/mean_per_class_recall": 0.25,
    }


def test_cli_modules_import_nothing_heavy_nor_the_training_loop():
    import subprocess
    import sys

    code = (
        "import sys, trainer.evaluation.cli, trainer.evaluation.report, "
        "trainer.evaluation.overlap, trainer.evaluation.retrieval, trainer.evaluation.zeroshot, "
        "trainer.evaluation.linear_probe, trainer.inference, manifests.evalsets; "
        "print(sorted(m for m in ('torch', 'pyarrow', 'duckdb', 'sklearn', 'open_clip', "
        "'matplotlib', 'trainer.train', 'pipeline') if m in sys.modules))"
    )  # nor the pipeline: the trainer is usable without it
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_zero_shot_evaluator_for_the_training_loop(tmp_path):
    from trainer.evaluation.zeroshot import ZeroShotEvaluator

    root = write_image_folder(tmp_path / "pets", {"cat": [solid((9, 9, 9))], "dog": [solid(0)]})
    with pytest.raises(ConfigError, match="not a folder"):
        ZeroShotEvaluator([tmp_path / "nope"], "clip-nano")
    evaluator = ZeroShotEvaluator([root], "clip-nano", templates="plain")
    model = models.create("clip-nano")
    flat = evaluator(model, "cpu")
    assert set(flat) == {
        "zeroshot/pets/top1",
        "zeroshot/pets/top5",
        "zeroshot/pets/mean_per_class_recall",
    }
    assert flat["zeroshot/pets/top5"] == 1.0 and flat["zeroshot/pets/top1"] in (0.0, 0.5, 1.0)
