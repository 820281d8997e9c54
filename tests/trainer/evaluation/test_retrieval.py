import duckdb
import pytest
import torch

from manifests import schema
from trainer.evaluation.retrieval import (
    heldout_sql,
    is_heldout,
    read_heldout,
    recall_at_k,
    retrieval_metrics,
    trainer_excluded,
)


def test_recall_at_k_by_hand():
    sim = torch.tensor(
        [
            [0.9, 0.1, 0.2, 0.0],  # positive 0 ranked 1st
            [0.8, 0.1, 0.7, 0.6],  # positive 1 ranked 4th
            [0.1, 0.3, 0.2, 0.0],  # positive 2 ranked 2nd
        ]
    )
    positives = torch.eye(3, 4, dtype=torch.bool)
    assert recall_at_k(sim, positives, ks=(1, 2, 4)) == {
        "R@1": pytest.approx(1 / 3),
        "R@2": pytest.approx(2 / 3),
        "R@4": pytest.approx(1.0),
    }
    # a query without any positive never counts as a hit
    assert recall_at_k(sim, torch.zeros(3, 4, dtype=torch.bool), ks=(4,))["R@4"] == 0.0


def test_identical_captions_are_one_text_both_ways():
    # images 0 and 1 share caption 0; image 2 has caption 1
    img = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    txt = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    m = retrieval_metrics(img, txt, [0, 0, 1], ks=(1, 2))
    # image->text: image 1 is nearer caption 1 (0.8 > 0.6): a miss at 1, a hit at 2
    assert m["image_to_text"] == {"R@1": pytest.approx(2 / 3), "R@2": 1.0}
    # text->image: caption 0's nearest image is image 0 (a positive); caption 1's is image 2
    assert m["text_to_image"] == {"R@1": 1.0, "R@2": 1.0}
    assert (m["n_images"], m["n_texts"]) == (3, 2)


def test_heldout_sql_selects_exactly_the_python_rule():
    uids = [schema.sample_uid(f"http://127.0.0.1/{i}.jpg", f"cap {i}") for i in range(2000)]
    con = duckdb.connect()
    con.execute("CREATE TABLE samples (uid VARCHAR)")
    con.executemany("INSERT INTO samples VALUES (?)", [[u] for u in uids])
    for permille in (0, 10, 250, 1000):
        held = {
            r[0]
            for r in con.execute(
                f"SELECT uid FROM samples WHERE {heldout_sql(permille)}"
            ).fetchall()
        }
        assert held == {u for u in uids if is_heldout(u, permille)}
    share = sum(is_heldout(u, 250) for u in uids) / len(uids)
    assert 0.2 < share < 0.3
    with pytest.raises(ValueError):
        heldout_sql(1001)


def test_read_heldout_rows_from_shards(shapes_dataset):
    rows = read_heldout(shapes_dataset, "", 1000, limit=10_000)
    assert len(rows) == 24 * 8  # every kept row, with its bytes and caption
    part = read_heldout(shapes_dataset, "", 300, limit=10_000)
    con = duckdb.connect()
    expected = con.execute(
        f"SELECT count(*) FROM read_parquet('{shapes_dataset}/manifests/samples/*.parquet') "
        f"WHERE status = 'kept' AND {heldout_sql(300)}"
    ).fetchone()[0]
    assert len(part) == expected and 0 < expected < len(rows)
    assert all(data[:2] == b"\xff\xd8" and caption.startswith("a ") for data, caption in part)
    assert len(read_heldout(shapes_dataset, "", 1000, limit=5)) == 5


def test_trainer_exclusion_is_read_from_the_checkpoint_config():
    assert trainer_excluded({}, 10) is None
    assert trainer_excluded({"where": ""}, 10) is False
    assert trainer_excluded({"where": f"NOT {heldout_sql(20)}"}, 10) is True
    assert trainer_excluded({"where": f"NOT {heldout_sql(5)}"}, 10) is False
    assert trainer_excluded({"where": heldout_sql(20)}, 10) is False  # trained on held-out only
    assert trainer_excluded({"heldout_permille": 10}, 10) is True
