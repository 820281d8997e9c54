"""Images in, shards out: every candidate of the test site ends with a final status."""

import io
import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from PIL import Image

import manifests
from manifests.layout import DatasetLayout
from pipeline.build import run_build
from pipeline.buildconfig import BuildConfig
from pipeline.testing.compare import undated
from pipeline.testing.crash import KILLED, killed_after
from pipeline.testing.site import IMAGE_CASES

QUERIES = ["cat", "dog", "bird", "fish", "owl", "café", "horse", "chat", "katze"]


def _config(tmp_path, site, **overrides) -> BuildConfig:
    queries = tmp_path / "queries.txt"
    queries.write_text("\n".join(QUERIES) + "\n", encoding="utf-8")
    values = dict(
        out=str(tmp_path / "ds"),
        query_list=str(queries),
        seeds=[site.base],
        allow_network=["127.0.0.1/32"],
        timeout=3.0,
        executor="local",
        languages=["en"],
        min_size=16,
        max_image_bytes=2 * 1024 * 1024,
        image_size=64,
        shard_size=4,
    )
    values.update(overrides)
    return BuildConfig.of(**values)


def _argv(tmp_path, site, out) -> list[str]:
    """`_config` as a command line (queries.txt must exist: _config writes it)."""
    options = (
        "--allow-network 127.0.0.1/32 --timeout 3 --executor local --languages en --min-size 16 "
        f"--max-image-bytes {2 * 1024 * 1024} --image-size 64 --shard-size 4"
    )
    base = ["--query-list", str(tmp_path / "queries.txt"), "--seeds", site.base, "--out", str(out)]
    return ["build", *base, *options.split()]


@pytest.fixture
def built(tmp_path, test_site):
    site, external = test_site
    config = _config(tmp_path, site)
    run_build(config)
    return config, site, external


@pytest.mark.timeout(180)
def test_every_candidate_ends_with_a_final_status(built):
    config, site, _ = built
    con = manifests.open(config.out)
    status = dict(con.execute("SELECT url, status FROM samples").fetchall())
    for path, _, _, _, expected in IMAGE_CASES:
        assert status[site.base + path[1:]] == expected, path
    assert "pending" not in status.values()
    kept = {u for u, s in status.items() if s == "kept"}
    assert site.base + "img/cat.png" in kept and site.base + "media/fish@2x.webp" in kept
    cat = con.execute(
        "SELECT uid, shard, shard_row FROM samples WHERE url LIKE '%/img/cat.png'"
    ).fetchone()
    copy = con.execute(
        "SELECT image_of, shard, shard_row, caption_index FROM samples "
        "WHERE url LIKE '%copy-of-cat.png'"
    ).fetchone()
    assert copy == (cat[0], cat[1], cat[2], 1)  # the same bytes: one image, two captions
    errors = con.execute(
        "SELECT count(*) FROM samples WHERE status != 'kept' AND error IS NULL "
        "AND status NOT IN ('no_query_match', 'over_query_cap')"
    ).fetchone()
    assert errors == (0,)  # every drop says why
    assert not [h for h in site.hits if h.startswith("/private/")]


@pytest.mark.timeout(180)
def test_kept_images_decode_and_match_their_manifest_rows(built):
    config, _, _ = built
    layout = DatasetLayout(config.out)
    con = manifests.open(config.out)
    rows = con.execute(
        "SELECT uid, shard, shard_row, width, height, caption, caption_index, image_of "
        "FROM samples WHERE status = 'kept'"
    ).fetchall()
    assert len(rows) >= 10
    shards = {}
    for uid, shard, shard_row, width, height, caption, caption_index, image_of in rows:
        if shard not in shards:
            shards[shard] = pq.read_table(layout.shards / shard)
            meta = pq.ParquetFile(layout.shards / shard).metadata
            assert all(meta.row_group(i).num_rows <= 1000 for i in range(meta.num_row_groups))
            stats = json.loads(
                (layout.shards / shard.replace(".parquet", "_stats.json")).read_text()
            )
            assert stats["successes"] == shards[shard].num_rows
        record = shards[shard].slice(shard_row, 1).to_pylist()[0]
        assert record["uid"] == (image_of or uid)
        assert record["captions"][caption_index] == caption
        image = Image.open(io.BytesIO(record["jpg"]))
        image.load()
        assert image.size == (width, height) == (64, 64)
    images = con.execute("SELECT count(*) FROM images").fetchone()[0]
    assert con.execute("SELECT sum(rows) FROM shards").fetchone() == (images,) == (len(rows) - 1,)


@pytest.mark.timeout(180)
def test_bomb_and_huge_body_stay_far_below_two_gib(tmp_path, test_site):
    """The build runs in a child process on the local executor (so the worker code runs in it);
    its own peak RSS at exit bounds what a worker used on the 40,000 x 40,000 PNG header and the
    30 MB body. The peak is the child's VmHWM (its own address space), not getrusage's
    ru_maxrss: Linux carries the spawning process's high-water mark across exec into that
    figure, which then holds whatever earlier tests left in this one (a torch model: 1 GiB)."""
    site, _ = test_site
    config = _config(tmp_path, site)
    code = (
        "import re, sys\n"
        "from pipeline.cli import main\n"
        "status = main(sys.argv[1:])\n"
        "text = open('/proc/self/status').read()\n"
        "print('PEAK_KIB', re.search(r'VmHWM:\\s+(\\d+) kB', text).group(1))\n"
        "sys.exit(status)\n"
    )
    argv = [sys.executable, "-c", code, *_argv(tmp_path, site, config.out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stderr[-3000:]
    peak_kib = int(done.stdout.split("PEAK_KIB")[1].split()[0])
    assert peak_kib < 2 * 1024 * 1024, f"peak RSS {peak_kib / 1024:.0f} MiB"
    status = dict(manifests.open(config.out).execute("SELECT url, status FROM samples").fetchall())
    assert status[site.base + "img/bomb.png"] == status[site.base + "img/huge.jpg"] == "too_large"
    print(f"peak RSS of the build: {peak_kib / 1024:.0f} MiB")


def _manifest_tables(root):
    layout = DatasetLayout(root)
    from manifests.commit import committed_files

    # Keyed by part: the file names carry a token of the attempt that wrote them.
    # Keyed by part; equal but for when each build checked the web (pipeline.testing.compare)
    return {
        p.name.split(".")[0]: undated(pq.read_table(p)) for p in committed_files(layout, "samples")
    }


@pytest.mark.timeout(240)
@pytest.mark.parametrize("crash_after", ["images:1", "shards:1"])
def test_killed_build_fetches_no_finished_part_again(tmp_path, test_site, crash_after):
    site, _ = test_site
    whole = _config(tmp_path, site, out=str(tmp_path / "whole"))
    run_build(whole)
    out = tmp_path / "killed"
    argv = _argv(tmp_path, site, out)
    killed = subprocess.run(
        killed_after(crash_after, argv), capture_output=True, text=True, timeout=200
    )
    assert killed.returncode == KILLED, killed.stderr
    before = len(site.hits)
    resumed = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *argv], capture_output=True, text=True, timeout=200
    )
    assert resumed.returncode == 0, resumed.stderr
    refetched = site.hits[before:]
    assert "/img/cat.png" not in refetched  # level 0's image part had finished
    if crash_after == "shards:1":
        assert refetched == []
    assert _manifest_tables(out) == _manifest_tables(whole.out)
    assert sorted(p.name for p in DatasetLayout(out).shards.iterdir()) == sorted(
        p.name for p in DatasetLayout(whole.out).shards.iterdir()
    )
