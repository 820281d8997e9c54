"""Politeness and load limits: per-host concurrency, per-host spacing of requests, global cap.

A request takes its host's semaphore, waits roughly for its host's turn, takes a global slot
(so requests waiting on a slow host never hold capacity other hosts could use), connects, and
only then, through its Gate, waits the rest of its turn: the spacing is between the moments
requests are sent, so a slow connect never pulls two sends together.

A host's budget may be shared by k tasks running at the same time, anywhere in a cluster (a host
with too many URLs for one task): task i of k gets per_host_concurrency // k requests in flight
(at least 1; the planner keeps k <= per_host_concurrency), and when requests must be spaced
(per_host_rps, robots.txt crawl-delay) the wall clock is cut into slots of that spacing plus a
send window and a margin, slot s belonging to task s mod k. Tasks then never send closer than the
spacing without talking to each other; on several machines this holds to the accuracy of their
clocks (NTP: milliseconds, against spacings of tens of milliseconds or more).

A limiter starts as if every host had been sent a request the moment it was made: the task that
owned the host before (the crawl's previous depth, the stage before) may have sent one just
then, and tasks do not talk. So a task's first request to a host waits one spacing.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

_SWEEP_EVERY = 1024  # slot releases between scans that forget idle hosts (bounds memory)
# A shared slot is the spacing + SLOT_WINDOW_S + SLOT_MARGIN_S long. A request is sent only if
# its wake-up came within the window of its slot's start; the margin is for the write that
# follows that check late: a process the OS did not run for a while, a thread waiting for the
# GIL (measured on a loaded 2-core machine: 11-14 ms late, which a 5 ms slack did not cover).
SLOT_WINDOW_S = 0.005
SLOT_MARGIN_S = 0.025


@dataclass(frozen=True)
class HostShare:
    parts: int  # k: the tasks that share this host's budget
    index: int  # i: this task's place among them, 0 <= i < k


def next_slot(t: float, length: float, share: HostShare) -> float:
    """The first start of one of `share`'s slots (of `length` seconds) at or after time `t`."""
    slot = math.ceil(t / length - 1e-9)
    slot += (share.index - slot) % share.parts
    return slot * length


@dataclass
class _HostState:
    sem: asyncio.Semaphore
    share: HostShare | None = None
    next_start: float = 0.0  # loop.time() (time.time() when shared) before which none is sent
    last_sent: float = -math.inf  # when the last request to the host was written
    interval: float = 0.0  # the spacing the last request asked for
    chain: asyncio.Future | None = None  # done once the latest request in turn has been written
    users: int = 0  # holders and waiters of `sem`
    active: int = field(default=0)  # currently holding `sem` (for observability / tests)

    def now(self) -> float:
        return time.time() if self.share is not None else asyncio.get_running_loop().time()


class Gate:
    """Where one request waits for its turn: after its connection is ready, before it is sent.
    Turns are taken in order: a request waits until the one before it has been written (its
    `sent()`), then until `interval` after that, so the spacing holds between writes even when
    a busy process writes late."""

    def __init__(self, st: _HostState, interval: float):
        self._st, self._interval = st, interval
        self.deadline: asyncio.Timeout | None = None  # a timeout the wait is not counted in
        self._turn: asyncio.Future | None = None

    async def wait(self) -> None:
        if self._turn is not None or self._interval <= 0:
            return
        loop, st = asyncio.get_running_loop(), self._st
        before, self._turn = st.chain, loop.create_future()
        st.chain = self._turn
        started = loop.time()
        if before is not None:
            await asyncio.shield(before)  # resolved when that request is written or given up
        await _wait_turn(st, self._interval)
        slept = loop.time() - started
        if slept > 0 and self.deadline is not None and self.deadline.when() is not None:
            self.deadline.reschedule(self.deadline.when() + slept)

    def sent(self) -> None:
        """The request has been written: the next one's spacing counts from now."""
        if self._turn is not None and not self._turn.done():
            self._st.last_sent = self._st.now()
            self._turn.set_result(None)

    def release(self) -> None:
        """The request is over; if it was never written, the next one need not wait for it."""
        if self._turn is not None and not self._turn.done():
            self._turn.set_result(None)


async def _wait_turn(st: _HostState, interval: float) -> None:
    """Sleep until a request to this host may be written (the one before it has been)."""
    if st.share is None:
        now = st.now()
        await asyncio.sleep(max(now, st.last_sent + interval, st.next_start) - now)
        return
    # Shared: write only within SLOT_WINDOW_S of one of our slots' starts; slots are longer
    # than interval by the window and the margin, so the writes of different tasks are at least
    # `interval` apart even when one is written up to the margin late. A late wake-up (a busy
    # process) takes our next slot rather than write into another task's.
    length = interval + SLOT_WINDOW_S + SLOT_MARGIN_S
    while True:
        now = st.now()
        start = next_slot(max(now, st.last_sent + interval, st.next_start), length, st.share)
        await asyncio.sleep(start - now)
        if st.now() - start <= SLOT_WINDOW_S:
            return


class HostLimiter:
    """Limit requests per host and overall.

    per_host_concurrency: requests in flight per host at once.
    per_host_rps: requests sent per second per host; 0 means no spacing.
    max_in_flight: requests in flight over all hosts.
    A caller may ask for a larger spacing per request (robots.txt crawl-delay) via `min_interval_s`.
    shares: host -> HostShare, for hosts whose budget this limiter holds only part of.
    """

    def __init__(
        self,
        per_host_concurrency: int,
        per_host_rps: float,
        max_in_flight: int,
        shares: dict[str, HostShare] | None = None,
    ):
        if per_host_concurrency < 1 or max_in_flight < 1:
            raise ValueError("per_host_concurrency and max_in_flight must be >= 1")
        if per_host_rps < 0:
            raise ValueError("per_host_rps must be >= 0 (0 = unlimited)")
        self.per_host_concurrency = per_host_concurrency
        self.base_interval_s = 1.0 / per_host_rps if per_host_rps > 0 else 0.0
        self._global = asyncio.Semaphore(max_in_flight)
        self._born = (asyncio.get_running_loop().time(), time.time())  # loop and wall clocks
        self._hosts: dict[str, _HostState] = {}
        self._releases = 0
        self.shares = {h: s for h, s in (shares or {}).items() if s.parts > 1}

    def concurrency(self, host: str) -> int:
        share = self.shares.get(host)
        if share is None:
            return self.per_host_concurrency
        return max(1, self.per_host_concurrency // share.parts)

    def _state(self, host: str) -> _HostState:
        st = self._hosts.get(host)
        if st is None:
            st = _HostState(asyncio.Semaphore(self.concurrency(host)), self.shares.get(host))
            st.last_sent = self._born[1] if st.share is not None else self._born[0]
            self._hosts[host] = st
        return st

    @asynccontextmanager
    async def slot(
        self, host: str, min_interval_s: float = 0.0, defer: bool = False
    ) -> AsyncIterator[Gate]:
        """Hold one of the host's (and the global) request slots, its turn waited for on entry;
        with `defer`, the caller waits it with `await gate.wait()` instead, once its connection
        is ready and right before it sends (the fetcher does, from aiohttp's connection trace)."""
        loop = asyncio.get_running_loop()
        st = self._state(host)
        st.users += 1
        try:
            async with st.sem:
                st.active += 1
                try:
                    st.interval = interval = max(self.base_interval_s, min_interval_s)
                    # the coarse wait for the host's turn, holding no global slot
                    early = max(st.next_start, st.last_sent + interval) - st.now()
                    if early > 0:
                        await asyncio.sleep(early)
                    async with self._global:
                        gate = Gate(st, interval)
                        try:
                            if not defer:
                                await gate.wait()
                                gate.sent()
                            yield gate
                        finally:
                            gate.release()
                finally:
                    st.active -= 1
        finally:
            st.users -= 1
            self._after_release(loop.time())

    def hold_off(self, host: str, seconds: float) -> None:
        """Delay every later request to `host` by at least `seconds` (server sent Retry-After)."""
        st = self._state(host)
        st.next_start = max(st.next_start, st.now() + seconds)

    def active(self, host: str) -> int:
        st = self._hosts.get(host)
        return st.active if st else 0

    def _after_release(self, now: float) -> None:
        self._releases += 1
        if self._releases % _SWEEP_EVERY:
            return
        wall = time.time()
        idle = [
            h
            for h, st in self._hosts.items()
            if st.users == 0
            and max(st.next_start, st.last_sent + st.interval) <= (wall if st.share else now)
        ]
        for h in idle:
            del self._hosts[h]
