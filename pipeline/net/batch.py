"""Many fetches with a bounded number of tasks (the image stage fetches this way).

Tasks are created lazily from the URL iterable, so millions of URLs never become millions of
pending tasks; per-host and global limits still apply inside the Fetcher.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

from aiohttp.abc import AbstractResolver

from .config import FetchConfig
from .fetch import Fetcher
from .result import FetchResult


async def iter_fetch(
    fetcher: Fetcher,
    urls: Iterable[str],
    *,
    max_tasks: int | None = None,
    max_bytes: int | None = None,
    truncate: bool = False,
) -> AsyncIterator[tuple[int, FetchResult]]:
    """Yield (index in `urls`, result) as fetches complete, with at most `max_tasks` running
    (default: the fetcher's max_in_flight). Breaking out of the loop cancels the rest.
    `truncate`: bodies over `max_bytes` are cut there, not refused (Fetcher.fetch)."""
    limit = max_tasks or fetcher.config.max_in_flight
    if limit < 1:
        raise ValueError(f"max_tasks must be >= 1, got {max_tasks!r}")
    source = iter(enumerate(urls))
    pending: dict[asyncio.Task[FetchResult], int] = {}
    exhausted = False
    try:
        while True:
            while not exhausted and len(pending) < limit:
                item = next(source, None)
                if item is None:
                    exhausted = True
                    break
                index, url = item
                fetch = fetcher.fetch(url, max_bytes, truncate)
                pending[asyncio.ensure_future(fetch)] = index
            if not pending:
                return
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                yield pending.pop(task), task.result()
    finally:
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


async def fetch_all(
    urls: Iterable[str],
    config: FetchConfig | None = None,
    *,
    resolver: AbstractResolver | None = None,
    max_tasks: int | None = None,
    max_bytes: int | None = None,
) -> list[FetchResult]:
    """Fetch every URL with a fresh Fetcher; results in input order.

    From synchronous code (a Ray task): `asyncio.run(fetch_all(urls, config))`.
    """
    url_list = list(urls)
    results: list[FetchResult | None] = [None] * len(url_list)
    async with Fetcher(config, resolver) as fetcher:
        async for index, result in iter_fetch(
            fetcher, url_list, max_tasks=max_tasks, max_bytes=max_bytes
        ):
            results[index] = result
    return [r for r in results if r is not None]
