"""A web of many hosts on one loopback server, and what its log says about politeness.

Every host name (h00.test, h01.test, ...) resolves to 127.0.0.1 through the fake resolver the
fetch layer takes, so tests send no traffic beyond loopback; the server tells the hosts apart by
the Host header. Images answer after `delay_s`, so requests to one host overlap when a fetcher
lets them, and the log (start and end of every request, per host) shows any breach of a per-host
limit across all the tasks and nodes of a build."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from pipeline.loopback import LoopbackServer, respond
from pipeline.testing.site import picture


@dataclass(frozen=True)
class LoggedHit:
    path: str
    host: str
    t: float  # time.monotonic() of the server's process (one clock for the whole machine)
    end: float | None
    late: float = 0.0  # how late the server's loop was around t: the most t may lag arrival


def _routes(spec: dict) -> dict:
    """robots.txt and every image route; images (and pages) answer `delay_s` late."""
    routes = {"/robots.txt": (200, {"Content-Type": "text/plain"}, spec["robots"].encode())}
    pages, hosts = spec.get("pages", 0), len(spec["counts"])
    for h, (name, n) in enumerate(spec["counts"]):
        for j in range(n):
            routes[f"/img/{h}/{j}.png"] = _late(picture(f"{name}/{j}", size=48), spec["delay_s"])
        if pages:
            # The host's index links to its pages and to the next host's index (a link the
            # crawl has seen already: a seed); page k shows the host's images j = k mod pages.
            links = [f"/pg/{h}/{k}.html" for k in range(pages)]
            routes[f"/site/{h}.html"] = _index(links, (h + 1) % hosts, spec["delay_s"])
            for k in range(pages):
                images = [
                    (f"/img/{h}/{j}.png", f"picture {j} of {name}") for j in range(k, n, pages)
                ]
                routes[f"/pg/{h}/{k}.html"] = _late(_html([], images), spec["delay_s"], "text/html")
    return routes


def _index(links: list[str], next_host: int, delay_s: float):
    """A host's index: its pages, and the next host's index (its port from the Host header)."""

    async def handler(request):
        port = request.headers.get("Host", "").rpartition(":")[2]
        other = f"http://h{next_host:02d}.test:{port}/site/{next_host}.html"
        await asyncio.sleep(delay_s)
        return respond((200, {"Content-Type": "text/html"}, _html([*links, other], [])))

    return handler


def _html(links: list[str], images: list[tuple[str, str]]) -> bytes:
    body = "".join(f'<a href="{u}">page</a>' for u in links)
    body += "".join(f'<img src="{u}" alt="{alt}">' for u, alt in images)
    return f"<html><body>{body}</body></html>".encode()


def _late(body: bytes, delay_s: float, content_type: str = "image/png"):
    answer = (200, {"Content-Type": content_type}, body)

    async def handler(_request):
        await asyncio.sleep(delay_s)
        return respond(answer)

    return handler


LAG_TICK_S = 0.002  # how often the server checks its own loop's lateness


def _lateness(lags: list[tuple[float, float]], t: float) -> float:
    """How much later than its arrival a request logged at `t` may have been logged: the
    lateness of the server's ticks whose wait spans `t` (a tick that began before `t` and
    ended after it, up to 50 ms after: the loop was held up across the request's arrival)."""
    import bisect

    lo = bisect.bisect_left(lags, (t - 2 * LAG_TICK_S, -1.0))
    hi = bisect.bisect_right(lags, (t + 0.05, float("inf")))
    return max((lag for when, lag in lags[lo:hi] if when - lag - LAG_TICK_S <= t), default=0.0)


def _serve() -> None:
    """The child process (`python -m pipeline.testing.manyhosts`): the spec as JSON on stdin,
    the port on stdout; serves the web, and its log at /__log__ (JSON), until stdin closes."""
    import contextlib
    import json
    import os
    import sys

    spec = json.loads(sys.stdin.readline())
    # The log is the judge of politeness: a server starved of CPU by the fetchers it watches
    # would note two requests that came apart as if they came together. Ask to run first.
    with contextlib.suppress(OSError):  # allowed for root (CAP_SYS_NICE) only
        os.nice(-10)
    server = LoopbackServer(routes=_routes(spec))
    lags: list[tuple[float, float]] = []  # (time.monotonic(), how late the server's loop woke)

    async def watch_lag() -> None:
        """The server's own lateness: a request it logs can be logged up to this late."""
        import time

        while True:
            before = time.monotonic()
            await asyncio.sleep(LAG_TICK_S)
            now = time.monotonic()
            lags.append((now, max(0.0, now - before - LAG_TICK_S)))
            del lags[: max(0, len(lags) - 200_000)]  # bounded: the last few minutes

    async def log(_request):
        hits = [h for h in server.hits if h.path != "/__log__"]
        rows = [
            {"path": h.path, "host": h.host, "t": h.t, "end": h.end, "late": _lateness(lags, h.t)}
            for h in hits
        ]
        return respond((200, {"Content-Type": "application/json"}, json.dumps(rows).encode()))

    server.routes["/__log__"] = log
    with server:
        watcher = asyncio.run_coroutine_threadsafe(watch_lag(), server._loop)
        print(server.port, flush=True)
        sys.stdin.read()  # until the parent closes it (or dies)
        watcher.cancel()


@dataclass
class ManyHosts:
    """`hosts` host names on one loopback server in a process of its own (so its log's times
    are not those of a server starved by the fetchers of the test's own process)."""

    hosts: int = 20
    images: int = 60  # over all hosts
    big_share: float = 0.5  # the first host holds this share of the images
    delay_s: float = 0.02  # each image answers this late
    robots: str = "User-agent: *\nDisallow: /private/\n"
    pages: int = 0  # pages per host (0: images only); each host's index is /site/<h>.html
    port: int = 0
    urls: dict[str, list[str]] = field(default_factory=dict)  # host -> its image URLs
    _process: object = None

    def names(self) -> list[str]:
        return [f"h{i:02d}.test" for i in range(self.hosts)]

    def resolver(self):
        from pipeline.net.policy import StaticResolver

        return StaticResolver(dict.fromkeys(self.names(), "127.0.0.1"))

    def __enter__(self) -> ManyHosts:
        import json
        import subprocess
        import sys

        big = round(self.images * self.big_share)
        counts = [big] + [0] * (self.hosts - 1)
        for i in range(self.images - big):
            counts[1 + i % (self.hosts - 1)] += 1
        spec = {
            "counts": list(zip(self.names(), counts, strict=True)),
            "delay_s": self.delay_s,
            "robots": self.robots,
            "pages": self.pages,
        }
        self._process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.testing.manyhosts"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._process.stdin.write(json.dumps(spec) + "\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        if not line.strip().isdigit():
            self.__exit__()
            raise RuntimeError("the many-hosts server did not start")
        self.port = int(line)
        for h, (name, n) in enumerate(spec["counts"]):
            self.urls[name] = [f"http://{name}:{self.port}/img/{h}/{j}.png" for j in range(n)]
        return self

    def __exit__(self, *exc) -> None:
        if self._process is not None:
            self._process.stdin.close()  # the child's signal to stop
            try:
                self._process.wait(10)
            except Exception:
                self._process.kill()
            self._process.stdout.close()
            self._process = None

    def seeds(self) -> list[str]:
        """Every host's index page (with `pages`)."""
        return [f"http://{n}:{self.port}/site/{h}.html" for h, n in enumerate(self.names())]

    def hits(self) -> list[LoggedHit]:
        import json
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/__log__", timeout=10) as r:
            return [LoggedHit(**row) for row in json.loads(r.read())]

    def all_urls(self) -> list[str]:
        return [u for urls in self.urls.values() for u in urls]

    def robots_fetches(self) -> Counter:
        """robots.txt requests per host."""
        return Counter(h.host for h in self.hits() if h.path == "/robots.txt")

    def image_hits(self) -> Counter:
        """Requests per image URL path."""
        return Counter(h.path for h in self.hits() if h.path.startswith("/img/"))


def politeness_breaches(hits, concurrency: int, min_interval_s: float, tolerance_s: float = 0.005):
    """Per host: the most requests it had in flight at once, and every pair of consecutive
    request starts closer than `min_interval_s` (less `tolerance_s` for clock jitter). A start
    is the server's log time, which trails the arrival by up to the server's own lateness then
    (`late`, measured by the server, not assumed): a pair is too close only if it is even when
    the first of them arrived that much earlier than logged.
    Returns {"in_flight": {host: max}, "too_close": [(host, gap_s)], "over": [hosts]}."""
    by_host: dict[str, list] = defaultdict(list)
    for hit in hits:
        by_host[hit.host].append(hit)
    in_flight, too_close = {}, []
    for host, host_hits in by_host.items():
        events = sorted([(h.t, 1) for h in host_hits] + [(h.end or h.t, -1) for h in host_hits])
        level = peak = 0
        for _, step in events:  # an end at the same instant as a start counts first
            level += step
            peak = max(peak, level)
        in_flight[host] = peak
        starts = sorted((h.t, getattr(h, "late", 0.0)) for h in host_hits)
        too_close += [
            (host, b - a)
            for (a, late), (b, _) in zip(starts, starts[1:], strict=False)
            if b - a + late < min_interval_s - tolerance_s
        ]
    over = sorted(h for h, peak in in_flight.items() if peak > concurrency)
    return {"in_flight": in_flight, "too_close": too_close, "over": over}


def _build() -> None:
    """`python -m pipeline.testing.manyhosts build`: a build (the flat options as JSON on
    stdin: {"options": {...}, "hosts": [...]}) with the fake DNS of these hosts, as a driver
    process of its own, so a test can kill a node under it."""
    import json
    import sys

    from pipeline.build import run_build
    from pipeline.buildconfig import BuildConfig
    from pipeline.net.policy import StaticResolver

    spec = json.loads(sys.stdin.read())
    resolver = StaticResolver(dict.fromkeys(spec["hosts"], "127.0.0.1"))
    run_build(BuildConfig.from_options(spec["options"]), resolver=resolver)


if __name__ == "__main__":
    import sys

    _build() if sys.argv[1:] == ["build"] else _serve()
