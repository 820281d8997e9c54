"""Image fetching on a Ray cluster of 1 or 2 worker nodes on loopback: images/s, and whether
every host's limits held across the nodes (from the web's own log, not from our code).

    python bench/bench_cluster_fetch.py --workers 1 2 --images 600 --hosts 20 --rps 20

A web of `--hosts` host names (fake DNS to loopback; one holds `--big-share` of the images, each
image answers after `--delay-ms`) in its own process; per worker count a fresh cluster (a head
with no CPUs for tasks, and that many 1-CPU worker nodes), then one build from a URL list of
those images (two captions each) with `--executor ray`. Printed per run: the fetch stage's wall
time and images/s (distinct URLs), the whole build's, requests in flight per host at most,
request starts closer than 1/rps, robots.txt requests per origin.
"""

import argparse
import csv
import json
import logging
import os
import tempfile
import time
from pathlib import Path

from pipeline.build import run_build
from pipeline.buildconfig import BuildConfig
from pipeline.testing.manyhosts import ManyHosts, politeness_breaches
from pipeline.testing.raycluster import TOKEN, RayHead


def url_list(path: Path, web: ManyHosts) -> str:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["url", "caption"])
        for url in web.all_urls():
            writer.writerows([(url, "a picture"), (url, "the same picture")])
    return str(path)


def one_run(web: ManyHosts, workers: int, args, root: Path) -> dict:
    head = RayHead(num_cpus=0, multinode=True)
    try:
        head.wait_ready()
        for _ in range(workers):
            head.add_worker(num_cpus=1)
        head.wait_nodes(1 + workers)
        out = root / f"ds-{workers}"
        config = BuildConfig.of(
            out=str(out),
            url_list=url_list(root / f"urls-{workers}.csv", web),
            allow_network=["127.0.0.1/32"],
            executor="ray",
            ray_address=head.gcs,
            per_host_concurrency=args.concurrency,
            per_host_rps=args.rps,
            urls_per_fetch_part=args.urls_per_part,
            rows_per_part=args.rows_per_part,
            image_size=64,
            shard_size=1000,
            timeout=30.0,
        )
        before = len(web.hits())
        started = time.perf_counter()
        run_build(config, resolver=web.resolver())
        wall = time.perf_counter() - started
    finally:
        head.stop()
    hits = web.hits()[before:]
    fetch = json.loads((out / "stats" / "fetch.json").read_text())
    breaches = politeness_breaches(hits, args.concurrency, 1 / args.rps)
    robots = [h.host for h in hits if h.path == "/robots.txt"]
    urls = len(web.all_urls())
    return {
        "workers": workers,
        "fetch_s": fetch["wall_seconds"],
        "fetch_images_per_s": urls / fetch["wall_seconds"],
        "build_s": wall,
        "lanes": fetch["extra"]["lanes"],
        "max_in_flight_per_host": max(breaches["in_flight"].values()),
        "too_close": len(breaches["too_close"]),
        "closest_ms": min((gap * 1000 for _, gap in breaches["too_close"]), default=None),
        "close_hosts": sorted({host for host, _ in breaches["too_close"]}),
        "over_concurrency": len(breaches["over"]),
        "robots_per_origin": sorted(set(robots.count(h) for h in web.names())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--big-share", type=float, default=0.5)
    parser.add_argument("--delay-ms", type=float, default=20)
    parser.add_argument("--rps", type=float, default=20)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--urls-per-part", type=int, default=50)
    parser.add_argument("--rows-per-part", type=int, default=200)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.update(RAY_AUTH_TOKEN=TOKEN, RAY_AUTH_MODE="token", NO_ALBUMENTATIONS_UPDATE="1")
    os.environ.pop("RAY_ADDRESS", None)
    web = ManyHosts(
        hosts=args.hosts, images=args.images, big_share=args.big_share, delay_s=args.delay_ms / 1000
    )
    big = round(args.images * args.big_share)
    print(
        f"web: {args.hosts} hosts, {args.images} images ({big} on one host), "
        f"{args.delay_ms:g} ms per image; limits: {args.concurrency} in flight, "
        f"{args.rps:g} requests/s per host; CPUs here: {os.cpu_count()}"
    )
    print(f"the big host alone needs at least {big / args.rps:.1f} s at {args.rps:g} requests/s")
    with web, tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        for workers in args.workers:
            r = one_run(web, workers, args, Path(tmp))
            print(
                f"{r['workers']} worker node(s): fetch {r['fetch_s']:.1f} s "
                f"({r['fetch_images_per_s']:.1f} images/s, {r['lanes']} lanes), build "
                f"{r['build_s']:.1f} s; per host at most {r['max_in_flight_per_host']} in "
                f"flight, {r['too_close']} starts closer than 1/rps"
                + (
                    f" (closest {r['closest_ms']:.1f} ms, hosts {', '.join(r['close_hosts'])})"
                    if r["too_close"]
                    else ""
                )
                + f", {r['over_concurrency']} "
                f"hosts over the concurrency limit; robots.txt per origin: "
                f"{r['robots_per_origin']}"
            )


if __name__ == "__main__":
    main()
