"""A tiny loopback HTTP server for the fetch-layer tests.

aiohttp.web runs in its own thread and event loop on (host, random port), so the fetcher under
test (in the test's loop) talks to it over real sockets. Every request is logged (path, headers,
time) and the server tracks how many handlers run at once, so tests can prove what was and was
not requested and that concurrency limits held.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CHUNK = b"x" * (64 * 1024)  # one shared buffer: streaming allocates nothing per chunk


@dataclass
class Hit:
    path: str  # path and query
    headers: dict[str, str]
    t: float  # time.monotonic() when the request arrived


class LoopbackServer:
    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self.port = 0
        self.routes: dict[str, Handler] = {}
        self.hits: list[Hit] = []
        self.active = 0
        self.max_active = 0
        self.bytes_streamed = 0  # body bytes written by the streaming handlers
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> LoopbackServer:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"loopback server on {self.host} did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._thread is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        # handler_cancellation: a client that hangs up cancels a slow handler at once
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, handler_cancellation=True)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, self.host, 0)
        self._loop.run_until_complete(site.start())
        self.port = self._runner.addresses[0][1]
        ready.set()
        self._loop.run_forever()
        self._loop.close()

    # ------------------------------------------------------------------ requests
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.hits.append(Hit(request.path_qs, dict(request.headers), time.monotonic()))
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            handler = self.routes.get(request.path)
            if handler is None:
                return web.Response(status=404, text="not found")
            return await handler(request)
        finally:
            self.active -= 1

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def count(self, path: str) -> int:
        return sum(1 for h in self.hits if h.path == path)

    def paths(self) -> list[str]:
        return [h.path for h in self.hits]

    # ------------------------------------------------------------------ route builders
    def text(self, path: str, body: str | bytes = "hello", status: int = 200, headers=None):
        data = body.encode() if isinstance(body, str) else body

        async def handler(_request: web.Request) -> web.StreamResponse:
            # a list of pairs so tests can send the same header twice
            return web.Response(status=status, body=data, headers=_multi(headers))

        self.routes[path] = handler

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        async def handler(_request: web.Request) -> web.StreamResponse:
            return web.Response(status=status, headers={"Location": location})

        self.routes[path] = handler

    def slow(self, path: str, seconds: float, body: str = "late") -> None:
        async def handler(_request: web.Request) -> web.StreamResponse:
            await asyncio.sleep(seconds)
            return web.Response(text=body)

        self.routes[path] = handler

    def sequence(self, path: str, responses: list[tuple[int, dict, str]]) -> None:
        """Answer the n-th request with responses[n] (the last one repeats)."""
        calls = {"n": 0}

        async def handler(_request: web.Request) -> web.StreamResponse:
            status, headers, body = responses[min(calls["n"], len(responses) - 1)]
            calls["n"] += 1
            return web.Response(status=status, text=body, headers=headers)

        self.routes[path] = handler

    def stream(self, path: str, total: int, declare_length: bool = False) -> None:
        """Stream `total` bytes (chunked, or with a Content-Length header), stopping when the
        client goes away; `bytes_streamed` counts what was written."""

        async def handler(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse()
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


def _multi(headers) -> list[tuple[str, str]] | None:
    if headers is None:
        return None
    if isinstance(headers, dict):
        return list(headers.items())
    return list(headers)
