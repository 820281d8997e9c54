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
    import json

    results = json.loads((out / "eval.json").read_text())["emoji-twitter"]
    assert 0.0 <= results["zero_shot"]["top1"] <= results["zero_shot"]["top5"] <= 1.0
    con = manifests.open(out / "dataset")
    statuses = dict(con.execute("SELECT status, count(*) FROM samples GROUP BY 1").fetchall())
    assert statuses["kept"] > 100
    # The demo's robots.txt forbids /private/ and one page opts out: neither gives a pair.
    assert con.execute("SELECT count(*) FROM samples WHERE page_url LIKE '%/private/%' "
                       "OR page_url LIKE '%optout%'").fetchone() == (0,)  # fmt: skip
    # A second run replaces the demo's own folder; any other folder is refused.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "file").write_text("x")
    assert main(["demo", "--out", str(tmp_path / "mine"), "--executor", "local"]) == 2
