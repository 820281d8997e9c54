"""One HTTP server on a loopback address: the demo's sample web and the tests' sites run on it.

aiohttp.web runs on its own event loop in a background thread, so a caller in any thread (a
build's own event loop included) reaches it over real sockets. A route maps a path to a fixed
answer (status, headers, body) or to an async handler (slow, streamed, changing answers). Every
request is logged as a `Hit` (path and query, headers, arrival time) and the server tracks how
many requests it serves at once (`max_active`), so tests can prove what was and was not asked
for and that concurrency limits held.
"""

from __future__ import annotations

import asyncio
import ipaddress
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiohttp import web

Headers = Mapping[str, str] | Iterable[tuple[str, str]]  # pairs: a header sent twice
Answer = tuple[int, Headers, bytes]  # status, headers, body
Handler = Callable[["web.Request"], Awaitable["web.StreamResponse"]]
CHUNK = b"x" * (64 * 1024)  # one shared buffer: streaming allocates nothing per chunk
NOT_FOUND: Answer = (404, {}, b"not found")


class Hit(str):
    """One request. It reads as its path and query, which is what most checks compare
    (`"/private/x" in server.hits`); `headers` and `t` (time.monotonic() on arrival) ride along."""

    headers: dict[str, str]
    t: float
    end: float | None  # time.monotonic() when the answer was sent (None while in flight)

    def __new__(cls, path: str, headers: dict[str, str] | None = None, t: float = 0.0) -> Hit:
        hit = super().__new__(cls, path)
        hit.headers, hit.t, hit.end = headers or {}, t, None
        return hit

    @property
    def host(self) -> str:
        """The Host header without its port: which site of a many-host web was asked."""
        return self.headers.get("Host", "").rsplit(":", 1)[0].lower()

    @property
    def path(self) -> str:
        return str(self)


class LoopbackServer:
    """Serves `routes` (path -> Answer or Handler; anything else is a 404) on (host, port), port 0
    meaning a free one. Start and stop it with `with`, or with start() and close()."""

    def __init__(self, host: str = "127.0.0.1", routes: dict | None = None, port: int = 0):
        if not _is_loopback(host):
            raise ValueError(f"{host!r} is not a loopback address")
        self.host, self.port = host, port
        self.routes: dict[str, Answer | Handler] = routes if routes is not None else {}
        self.hits: list[Hit] = []
        self.active = self.max_active = 0
        self.bytes_streamed = 0  # body bytes written by stream() handlers
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> LoopbackServer:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"loopback server on {self.host} did not start")
        if self._error is not None:
            raise self._error
        return self

    def close(self) -> None:
        if self._loop is None:
            return
        loop, self._loop = self._loop, None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)

    def __enter__(self) -> LoopbackServer:
        return self if self._loop is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            self._runner = loop.run_until_complete(self._listen())
            self._loop = loop
        except BaseException as exc:  # a taken port, an address not on this machine: tell start()
            self._error = exc
        ready.set()
        if self._error is None:
            loop.run_forever()
        loop.close()

    async def _listen(self):
        from aiohttp import web

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        # handler_cancellation: a client that hangs up cancels a slow handler at once, and a
        # short shutdown_timeout keeps close() quick while one is still sleeping; no access log,
        # or the demo's INFO log would get a line per request.
        runner = web.AppRunner(
            app, shutdown_timeout=0.5, handler_cancellation=True, access_log=None
        )
        await runner.setup()
        await web.TCPSite(runner, self.host, self.port).start()
        self.port = runner.addresses[0][1]
        return runner

    # ------------------------------------------------------------------ requests
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        # Runs on the server's loop only, so the counters need no lock.
        hit = Hit(request.path_qs, dict(request.headers), time.monotonic())
        self.hits.append(hit)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            route = self.routes.get(request.path, NOT_FOUND)
            return await route(request) if callable(route) else respond(route)
        finally:
            self.active -= 1
            hit.end = time.monotonic()

    @property
    def base(self) -> str:
        """The server's root URL, with the trailing slash: "http://127.0.0.1:PORT/"."""
        return self.url("/")

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def count(self, path: str) -> int:
        return sum(1 for h in self.hits if h == path)

    def paths(self) -> list[str]:
        return [h.path for h in self.hits]

    # ------------------------------------------------------------------ route builders
    def text(self, path: str, body: str | bytes = "hello", status: int = 200, headers=None):
        self.routes[path] = (status, headers or {}, _bytes(body))

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        self.routes[path] = (status, {"Location": location}, b"")

    def slow(self, path: str, seconds: float, body: str | bytes = "late", headers=None) -> None:
        """Answer 200 with `body`, `seconds` after the request came."""
        answer = (200, headers or {}, _bytes(body))

        async def handler(_request: web.Request) -> web.StreamResponse:
            await asyncio.sleep(seconds)
            return respond(answer)

        self.routes[path] = handler

    def sequence(self, path: str, responses: list[tuple[int, dict, str]]) -> None:
        """Answer the n-th request with responses[n] (the last one repeats)."""
        calls = {"n": 0}

        async def handler(_request: web.Request) -> web.StreamResponse:
            status, headers, body = responses[min(calls["n"], len(responses) - 1)]
            calls["n"] += 1
            return respond((status, headers, _bytes(body)))

        self.routes[path] = handler

    def stream(self, path: str, total: int, declare_length: bool = False, headers=None) -> None:
        """Stream `total` bytes (chunked, or with a Content-Length header), stopping when the
        client goes away; `bytes_streamed` counts what was written."""

        async def handler(request: web.Request) -> web.StreamResponse:
            from aiohttp import web

            resp = web.StreamResponse(headers=_pairs(headers))
            if declare_length:
                resp.content_length = total
            await resp.prepare(request)
            sent = 0
            try:
                while sent < total:
                    n = min(len(CHUNK), total - sent)
                    await resp.write(CHUNK[:n] if n < len(CHUNK) else CHUNK)
                    sent += n
                    self.bytes_streamed += n
                await resp.write_eof()
            except (ConnectionError, RuntimeError):
                pass  # the client hung up, as it should on an oversized body
            return resp

        self.routes[path] = handler


def respond(answer: Answer) -> web.Response:
    """The response for a fixed answer: what a handler that answers late or in turns returns."""
    from aiohttp import web

    status, headers, body = answer
    return web.Response(status=status, body=body, headers=_pairs(headers))


def _pairs(headers: Headers | None) -> list[tuple[str, str]] | None:
    """Headers as (name, value) pairs, so the same header may be sent twice."""
    if not headers:
        return None
    return list(headers.items()) if isinstance(headers, Mapping) else list(headers)


def _bytes(body: str | bytes) -> bytes:
    return body.encode() if isinstance(body, str) else body


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
