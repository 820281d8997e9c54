"""A build on a Ray cluster of three nodes on this machine: a head that runs no tasks (the
driver's) and two worker nodes with one CPU, their own ports and their own temp dirs, against a
web of 20 hosts (fake DNS to loopback) where one host holds half of the images.

Checked: the same manifests as the local executor on the same input; the web's own log shows
every host's limits held across both nodes (requests in flight, spacing of request starts) and
exactly one robots.txt request per origin; every stage with several parts ran tasks on both
nodes; a worker node killed mid-build, then a rerun, still gives the same manifests."""

import csv
import json
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

import manifests
from manifests.layout import DatasetLayout
from pipeline.build import run_build
from pipeline.buildconfig import BuildConfig
from pipeline.testing.compare import SAMPLES_UNDATED_SQL
from pipeline.testing.manyhosts import ManyHosts, politeness_breaches
from pipeline.testing.raycluster import RayHead, http_json, ray_env, stop_node

pytestmark = [pytest.mark.ray, pytest.mark.slow]
CONCURRENCY, RPS = 2, 10.0
OPTIONS = dict(
    allow_network=["127.0.0.1/32"],
    timeout=10.0,
    per_host_concurrency=CONCURRENCY,
    per_host_rps=RPS,
    urls_per_fetch_part=10,
    rows_per_part=30,
    image_size=32,
    shard_size=15,
    near_dup_radius=4,
    near_dup_verify="orb",  # the verification phases (feats, verify) on the nodes, on S3 too
    clip_top_fraction=0.9,
    semdedup_eps=0.005,  # clip-nano's random weights embed all images close together
    device="cpu",
)


@pytest.fixture(scope="module")
def options(tmp_path_factory):
    """OPTIONS with a CLIP checkpoint (clip-nano, random weights) for the score and clip stages."""
    from tests.trainer.evaluation.helpers import save_checkpoint

    checkpoint = save_checkpoint(tmp_path_factory.mktemp("model") / "nano.pt")
    return {**OPTIONS, "clip_model": str(checkpoint)}


@pytest.fixture(scope="module")
def cluster(s3_server):
    # The drivers' node runs no tasks. Every node knows the loopback S3 server, as the nodes of
    # a cloud cluster know their object store (credentials from the environment).
    head = RayHead(num_cpus=0, multinode=True, env=s3_server.env)
    try:
        head.wait_ready()
        head.add_worker(num_cpus=1)
        head.add_worker(num_cpus=1)
        head.wait_nodes(3)
        yield head
    finally:
        head.stop()


@pytest.fixture(scope="module")
def web():
    with ManyHosts(hosts=20, images=60, big_share=0.5, delay_s=0.02) as hosts:
        yield hosts


def url_list(path, web) -> str:
    """Every image twice (two captions), 120 rows: 4 parts of 30."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["url", "caption"])
        for url in web.all_urls():
            writer.writerows([(url, "a picture"), (url, "the same picture")])
    return str(path)


def samples(out) -> list[tuple]:
    con = manifests.open(out)
    return con.execute(f"{SAMPLES_UNDATED_SQL} ORDER BY uid").fetchall()


def tasks_by_stage(head) -> dict[str, set[str]]:
    """stage -> the nodes its tasks ran on (tasks are named `<stage>:<part>`)."""
    answer = http_json(f"{head.dashboard}/api/v0/tasks?limit=10000&detail=true", timeout=30)
    nodes: dict[str, set[str]] = {}
    for task in answer["data"]["result"]["result"]:
        if ":" in task["name"] and task.get("node_id"):
            nodes.setdefault(task["name"].split(":")[0], set()).add(task["node_id"])
    return nodes


@pytest.fixture(scope="module")
def local_build(web, options, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("local")
    config = BuildConfig.of(
        out=str(tmp / "ds"), url_list=url_list(tmp / "urls.csv", web), executor="local", **options
    )
    run_build(config, resolver=web.resolver())
    return tmp / "ds"


def driver(cluster, web, out, urls, options, env=None) -> subprocess.Popen:
    """A `pipeline build` driver process of its own on the cluster (this process has run local
    Ray runtimes of other tests: a driver here would carry their state), with the web's DNS.
    `urls`: a URL list, or None where `options` name seeds."""
    options = {**options, "out": str(out), "executor": "ray", "ray_address": cluster.gcs}
    if urls is not None:
        options["url_list"] = urls
    argv = [sys.executable, "-m", "pipeline.testing.manyhosts", "build"]
    process = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        env={**ray_env(True), **(env or {})},
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    process.stdin.write(json.dumps({"options": options, "hosts": web.names()}))
    process.stdin.close()
    return process


@pytest.mark.timeout(400)
def test_a_ray_build_on_two_nodes_is_polite_and_makes_the_same_manifests(
    cluster, web, options, local_build, tmp_path
):
    config = BuildConfig.of(
        out=str(tmp_path / "ds"), url_list=url_list(tmp_path / "u.csv", web), **options
    )
    before = len(web.hits())
    build = driver(cluster, web, config.out, config.source.url_list, options)
    assert build.wait(timeout=300) == 0, build.stdout.read()[-3000:]
    assert samples(config.out) == samples(local_build)
    hits = web.hits()[before:]
    robots = [h.host for h in hits if h.path == "/robots.txt"]
    assert sorted(robots) == sorted(web.names())  # one per origin, over both nodes
    images = [h.path for h in hits if h.path.startswith("/img/")]
    assert sorted(images) == sorted({u.split(str(web.port), 1)[1] for u in web.all_urls()})
    breaches = politeness_breaches(hits, CONCURRENCY, 1 / RPS)
    assert breaches["over"] == [] and breaches["too_close"] == [], breaches
    big = json.loads((DatasetLayout(config.out).stage_dir("fetch") / "lanes.json").read_text())
    assert len(big) >= 4  # lanes: the big host's two and the small hosts' packed ones
    spread = tasks_by_stage(cluster)
    per_part = ("match", "balance", "text", "fetch", "images", "dedup", "score", "clip")
    for stage in (*per_part, "shards", "publish"):
        assert len(spread.get(stage, ())) == 2, (stage, spread)
    stats = DatasetLayout(config.out).stats
    dedup, clip = (
        json.loads((stats / f"{s}.json").read_text())["extra"] for s in ("dedup", "clip")
    )
    assert clip["scored"] == 60 and clip["semantic_duplicates"] > 0 and dedup["buckets"] == 2
    phases = DatasetLayout(config.out).stage_dir("dedup") / "phases"
    assert (phases / "pairs-1.done").exists() and (phases / "near-1.done").exists()
    assert len(list(phases.glob("feats-*.done"))) == len(
        json.loads((DatasetLayout(config.out).work / "parts.json").read_text())
    )
    assert (phases / "verify-1.done").exists()


@pytest.fixture(scope="module")
def crawl_web():
    with ManyHosts(hosts=20, images=60, big_share=0.5, delay_s=0.02, pages=2) as hosts:
        yield hosts


@pytest.mark.timeout(400)
def test_a_crawl_on_two_nodes_is_polite_and_crawls_what_a_local_crawl_does(
    cluster, crawl_web, tmp_path
):
    queries = tmp_path / "queries.txt"
    queries.write_text("picture\n")
    options = {**OPTIONS, "seeds": crawl_web.seeds(), "query_list": str(queries), "max_depth": 1}
    options = {
        k: v
        for k, v in options.items()
        if k not in ("near_dup_radius", "near_dup_verify", "semdedup_eps")
    }
    options.pop("clip_top_fraction")
    local = BuildConfig.of(out=str(tmp_path / "local"), executor="local", **options)
    run_build(local, resolver=crawl_web.resolver())
    before = len(crawl_web.hits())
    build = driver(cluster, crawl_web, tmp_path / "ds", None, options)
    assert build.wait(timeout=300) == 0, build.stdout.read()[-3000:]
    assert samples(tmp_path / "ds") == samples(local.out)
    assert len(samples(local.out)) == 60  # every image: 20 indexes -> 40 pages -> 60 images
    hits = crawl_web.hits()[before:]
    assert sorted(h.host for h in hits if h.path == "/robots.txt") == sorted(crawl_web.names())
    pages = [h.path for h in hits if h.path.endswith(".html")]
    assert len(pages) == len(set(pages)) == 20 + 40  # each page once, over both nodes
    breaches = politeness_breaches(hits, CONCURRENCY, 1 / RPS)
    assert breaches["over"] == [] and breaches["too_close"] == [], breaches
    parts = json.loads((DatasetLayout(tmp_path / "ds").work / "parts.json").read_text())
    assert len(parts) >= 4 and all(p.startswith("crawl-") for p in parts)
    assert len(tasks_by_stage(cluster)["sources"]) == 2  # the crawl ran on both nodes


@pytest.mark.timeout(500)
def test_a_worker_node_killed_mid_build_then_a_rerun_gives_the_same_manifests(
    cluster, web, options, local_build, tmp_path
):
    out, urls = tmp_path / "ds", url_list(tmp_path / "u.csv", web)
    first = driver(cluster, web, out, urls, options)
    fetch_dir = DatasetLayout(out).stage_dir("fetch")
    deadline = time.monotonic() + 200
    while not list(fetch_dir.glob("lane*.done")):  # mid-fetch: some lanes done, not all
        assert first.poll() is None and time.monotonic() < deadline, first.stdout.read()[-3000:]
        time.sleep(0.2)
    victim, _ = cluster.workers[0]
    stop_node(victim, kill=True)
    first.wait(timeout=300)  # Ray retries the lost tasks on the other node, or the run fails
    second = driver(cluster, web, out, urls, options)
    assert second.wait(timeout=300) == 0, second.stdout.read()[-3000:]
    assert samples(out) == samples(local_build)
    done = sorted(p.name for p in fetch_dir.glob("lane*.parquet"))
    assert pq.read_table(fetch_dir / done[0]).num_rows > 0


@pytest.mark.timeout(400)
def test_a_build_on_s3_with_no_disk_shared_between_nodes_makes_the_same_manifests(
    cluster, web, options, local_build, tmp_path, s3, s3_server
):
    """Inputs, model and dataset in the store: the nodes share nothing but S3 (each has its own
    temp dir, and a worker opening a dataset path as a local file would fail on `s3://`)."""
    from manifests.storage import location

    root = location(s3)
    (root / "in" / "urls.csv").upload(url_list(tmp_path / "u.csv", web))
    (root / "in" / "nano.pt").upload(options["clip_model"])
    remote = {**options, "clip_model": f"{s3}/in/nano.pt"}
    out = f"{s3}/ds"
    build = driver(cluster, web, out, f"{s3}/in/urls.csv", remote, env=s3_server.env)
    assert build.wait(timeout=300) == 0, build.stdout.read()[-3000:]
    assert samples(out) == samples(local_build)
    spread = tasks_by_stage(cluster)
    for stage in ("fetch", "images", "dedup", "score", "shards", "publish"):
        assert len(spread.get(stage, ())) == 2, (stage, spread)
    record = json.loads((root / "ds" / "dataset.json").read_text())
    assert record["version"] == 1 and record["files"]["shards"]
