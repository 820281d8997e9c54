"""`pipeline demo` runs the whole story on the embedded sample web (trimmed training)."""

import pytest

import manifests
from pipeline.cli import main


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_demo_builds_reports_and_trains(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--executor", "local", "--train-samples", "256"]) == 0
    printed = capsys.readouterr().out
    assert "report:" in printed and "checkpoint:" in printed and "zero-shot on" in printed
    assert (out / "dataset" / "report.html").stat().st_size > 10_000
    assert (out / "run" / "latest.pt").exists() and (out / "run" / "metrics.csv").exists()
    # one page or image per opt-out signal, and the summary names each
    assert "opted out, by signal" in printed
    for signal in (
        "robots.txt content-usage",
        "tdmrep.json",
        "ai.txt",
        "x-robots-tag",
        "content-usage",
        "tdm-reservation",
        "meta robots",
        "meta tdm-reservation",
    ):
        assert f"│ {signal} " in printed, signal
    import json

    eval_set = out / "evalsets" / "emoji-twitter"
    n_images = sum(1 for p in eval_set.rglob("*") if p.is_file())
    results = json.loads((out / "eval.json").read_text())["emoji-twitter"]
    zero_shot, overlap = results["zero_shot"], results["overlap"]
    # every eval image was classified among every class: top-1 is a count of hits over them
    assert results["info"]["n_images"] == n_images == 300
    assert results["info"]["n_classes"] == len([p for p in eval_set.iterdir() if p.is_dir()])
    hits = zero_shot["top1"] * n_images
    assert abs(hits - round(hits)) < 1e-3 and zero_shot["top1"] <= zero_shot["top5"] <= 1.0
    assert f"top-1 {zero_shot['top1']:.1%}, top-5 {zero_shot['top5']:.1%}" in printed
    rows = (out / "run" / "metrics.csv").read_text().splitlines()
    assert rows[-1].split(",")[1] == "256"  # samples_seen at the end of the schedule
    con = manifests.open(out / "dataset")
    # the Clean/Overlap split is the build's leak check: the same eval images have copies
    leaked = con.execute(
        "SELECT count(DISTINCT leak_of) FROM samples WHERE status = 'eval_leak'"
    ).fetchone()[0]
    assert overlap["available"] and overlap["n_overlap"] == leaked > 0
    assert overlap["n_clean"] + overlap["n_overlap"] == overlap["n_all"] == n_images
    statuses = dict(con.execute("SELECT status, count(*) FROM samples GROUP BY 1").fetchall())
    assert statuses["kept"] > 100
    # The demo's robots.txt forbids /private/ and one page opts out: neither gives a pair.
    assert con.execute(
        "SELECT count(*) FROM samples WHERE page_url LIKE '%/private/%' OR page_url LIKE '%optout%'"
    ).fetchone() == (0,)
    # A second run replaces the demo's own folder; any other folder is refused.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "file").write_text("x")
    assert main(["demo", "--out", str(tmp_path / "mine"), "--executor", "local"]) == 2
