"""Politeness and load limits: per-host concurrency, per-host spacing of request starts, global cap.

Order of acquisition matters: a request first takes its host's semaphore, then waits for its
host's start time, and only then takes a global slot, so requests sleeping on a slow host never
hold global capacity that other hosts could use.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

_SWEEP_EVERY = 1024  # slot releases between scans that forget idle hosts (bounds memory)


@dataclass
class _HostState:
    sem: asyncio.Semaphore
    next_start: float = 0.0  # loop.time() before which no new request may start
    users: int = 0  # holders and waiters of `sem`
    active: int = field(default=0)  # currently holding `sem` (for observability / tests)


class HostLimiter:
    """Limit requests per host and overall.

    per_host_concurrency: requests in flight per host at once.
    per_host_rps: request starts per second per host; 0 means no spacing.
    max_in_flight: requests in flight over all hosts.
    A caller may ask for a larger spacing per request (robots.txt crawl-delay) via `min_interval_s`.
    """

    def __init__(self, per_host_concurrency: int, per_host_rps: float, max_in_flight: int):
        if per_host_concurrency < 1 or max_in_flight < 1:
            raise ValueError("per_host_concurrency and max_in_flight must be >= 1")
        if per_host_rps < 0:
            raise ValueError("per_host_rps must be >= 0 (0 = unlimited)")
        self.per_host_concurrency = per_host_concurrency
        self.base_interval_s = 1.0 / per_host_rps if per_host_rps > 0 else 0.0
        self._global = asyncio.Semaphore(max_in_flight)
        self._hosts: dict[str, _HostState] = {}
        self._releases = 0

    def _state(self, host: str) -> _HostState:
        st = self._hosts.get(host)
        if st is None:
            st = _HostState(asyncio.Semaphore(self.per_host_concurrency))
            self._hosts[host] = st
        return st

    @asynccontextmanager
    async def slot(self, host: str, min_interval_s: float = 0.0) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        st = self._state(host)
        st.users += 1
        try:
            async with st.sem:
                st.active += 1
                try:
                    # Reserve the next start time before sleeping so concurrent waiters queue up
                    # one interval apart instead of all waking together.
                    interval = max(self.base_interval_s, min_interval_s)
                    now = loop.time()
                    start = max(now, st.next_start)
                    st.next_start = max(st.next_start, start + interval)
                    if start > now:
                        await asyncio.sleep(start - now)
                    async with self._global:
                        yield
                finally:
                    st.active -= 1
        finally:
            st.users -= 1
            self._after_release(loop.time())

    def hold_off(self, host: str, seconds: float) -> None:
        """Delay every later request to `host` by at least `seconds` (server sent Retry-After)."""
        now = asyncio.get_running_loop().time()
        st = self._state(host)
        st.next_start = max(st.next_start, now + seconds)

    def active(self, host: str) -> int:
        st = self._hosts.get(host)
        return st.active if st else 0

    def _after_release(self, now: float) -> None:
        self._releases += 1
        if self._releases % _SWEEP_EVERY:
            return
        idle = [h for h, st in self._hosts.items() if st.users == 0 and st.next_start <= now]
        for h in idle:
            del self._hosts[h]
