"""Which IP addresses the crawler may connect to, enforced at DNS resolution time.

The default allows only globally routable unicast addresses, so a URL on the web can never make us
reach loopback, private networks, link-local (cloud metadata at 169.254.169.254) or multicast.
`--allow-network CIDR` widens that, e.g. to crawl a local test web on 127.0.0.1/32.

`GuardedResolver` sits inside the aiohttp connector: every connection the session opens gets its
addresses from it, and it only ever hands out allowed ones. Checking a name and then letting the
connector resolve it again would leave a window for DNS rebinding; filtering at the one resolver
the connector uses closes it. aiohttp never calls the resolver for IP-literal hosts, so the
fetcher checks those itself with `AddressPolicy.allows`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence

from aiohttp.abc import AbstractResolver, ResolveResult

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class BlockedAddressError(OSError):
    """A host resolved only to addresses the policy refuses.

    An OSError so that aiohttp's connector wraps it like any other resolution failure (it keeps it
    as `__cause__`/`os_error`), instead of letting it escape as an unexpected exception.
    """

    def __init__(self, host: str, addresses: Sequence[str]):
        self.host = host
        self.addresses = list(addresses)
        shown = ", ".join(self.addresses[:4]) or "no address"
        super().__init__(f"{host} refused: address not allowed ({shown})")


def parse_ip(value: str | IPAddress) -> IPAddress | None:
    """Parse an address, dropping an IPv6 zone id and unwrapping IPv4-mapped IPv6; None if not an IP."""
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        addr: IPAddress = value
    else:
        text = value.strip().strip("[]").split("%", 1)[0]
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            return None
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.scope_id:
            addr = ipaddress.IPv6Address(addr.compressed.split("%", 1)[0])
        if addr.ipv4_mapped is not None:
            return addr.ipv4_mapped
    return addr


def _is_public(addr: IPAddress) -> bool:
    # `is_global` alone lets multicast (224/4) and some reserved ranges through, hence the extras.
    if not addr.is_global or addr.is_multicast or addr.is_reserved or addr.is_unspecified:
        return False
    if addr.is_loopback or addr.is_link_local or addr.is_private:
        return False
    if isinstance(addr, ipaddress.IPv6Address):
        # 6to4 and Teredo embed an IPv4 address that a relay would forward to.
        if addr.sixtofour is not None and not _is_public(addr.sixtofour):
            return False
        if addr.teredo is not None and not _is_public(addr.teredo[1]):
            return False
    return True


class AddressPolicy:
    """Allow public addresses, plus any address inside `allow_networks` (CIDR strings)."""

    def __init__(self, allow_networks: Sequence[str] = ()):
        if isinstance(allow_networks, str):
            raise ValueError("allow_networks must be a list of CIDR strings, not one string")
        networks: list[IPNetwork] = []
        for cidr in allow_networks:
            if not isinstance(cidr, str):
                raise ValueError(
                    f"invalid network {cidr!r}: expected a CIDR string like 10.0.0.0/8"
                )
            try:
                networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
            except ValueError as exc:
                raise ValueError(
                    f"invalid network {cidr!r}: expected a CIDR like 127.0.0.1/32 or fd00::/8 ({exc})"
                ) from None
        self.networks: tuple[IPNetwork, ...] = tuple(networks)

    def allows(self, ip: str | IPAddress) -> bool:
        addr = parse_ip(ip)
        if addr is None:
            return False
        if any(addr.version == net.version and addr in net for net in self.networks):
            return True
        return _is_public(addr)

    def __repr__(self) -> str:
        return f"AddressPolicy(allow_networks={[str(n) for n in self.networks]})"


class StaticResolver(AbstractResolver):
    """Fake DNS for tests and offline runs: a fixed name -> addresses table, nothing else resolves.

    Names are matched case-insensitively, ignoring a trailing dot. Unknown names fail like NXDOMAIN.
    """

    def __init__(self, table: Mapping[str, Sequence[str]]):
        self._table: dict[str, list[str]] = {}
        for name, addresses in table.items():
            if isinstance(addresses, str):
                addresses = [addresses]
            for a in addresses:
                ipaddress.ip_address(a)  # a typo in a test table should fail loudly here
            self._table[name.lower().rstrip(".")] = list(addresses)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_UNSPEC
    ) -> list[ResolveResult]:
        addresses = self._table.get(host.lower().rstrip("."))
        if not addresses:
            raise OSError(socket.EAI_NONAME, f"{host}: name not known (static resolver)")
        results: list[ResolveResult] = []
        for a in addresses:
            fam = socket.AF_INET6 if ":" in a else socket.AF_INET
            if family not in (socket.AF_UNSPEC, fam):
                continue
            results.append(
                ResolveResult(hostname=host, host=a, port=port, family=fam, proto=0, flags=0)
            )
        if not results:
            raise OSError(socket.EAI_NONAME, f"{host}: no address of the requested family")
        return results

    async def close(self) -> None:
        return None


class GuardedResolver(AbstractResolver):
    """Resolve through `base`, keep only allowed addresses, raise BlockedAddressError if none is.

    Results are cached for `cache_ttl_s` seconds (bounded LRU of `cache_size` names) and concurrent
    lookups of one name share a single query. The cache only ever holds already-filtered answers, so
    it cannot reintroduce a refused address. Give the connector `use_dns_cache=False` so this is the
    only cache.
    """

    def __init__(
        self,
        policy: AddressPolicy,
        base: AbstractResolver,
        cache_ttl_s: float = 60.0,
        cache_size: int = 10_000,
    ):
        self.policy = policy
        self.base = base
        self.cache_ttl_s = cache_ttl_s
        self.cache_size = cache_size
        # key -> (expiry on the monotonic clock, filtered results or the BlockedAddressError)
        self._cache: OrderedDict[tuple, tuple[float, list[ResolveResult] | BlockedAddressError]]
        self._cache = OrderedDict()
        self._inflight: dict[tuple, asyncio.Future[list[ResolveResult]]] = {}

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_UNSPEC
    ) -> list[ResolveResult]:
        key = (host.lower(), port, int(family))
        hit = self._cache.get(key)
        if hit is not None and hit[0] > time.monotonic():
            self._cache.move_to_end(key)
            if isinstance(hit[1], BlockedAddressError):
                raise BlockedAddressError(hit[1].host, hit[1].addresses)
            return list(hit[1])
        pending = self._inflight.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._lookup(key, host, port, family))
            self._inflight[key] = pending
            pending.add_done_callback(lambda f: self._lookup_done(key, f))
        # shield: one cancelled caller must not cancel the lookup the others are waiting on
        return list(await asyncio.shield(pending))

    def _lookup_done(self, key: tuple, fut: asyncio.Future) -> None:
        self._inflight.pop(key, None)
        if not fut.cancelled():
            fut.exception()  # mark retrieved: every waiter may have been cancelled meanwhile

    async def _lookup(
        self, key: tuple, host: str, port: int, family: socket.AddressFamily
    ) -> list[ResolveResult]:
        answers = await self.base.resolve(host, port, family)
        allowed = [r for r in answers if self.policy.allows(r["host"])]
        if not allowed:
            err = BlockedAddressError(host, [r["host"] for r in answers])
            log.debug("dns %s -> %s: refused", host, err.addresses)
            self._store(key, err)
            raise err
        if len(allowed) < len(answers):
            log.debug("dns %s: dropped %d refused addresses", host, len(answers) - len(allowed))
        self._store(key, allowed)
        return allowed

    def _store(self, key: tuple, value: list[ResolveResult] | BlockedAddressError) -> None:
        if self.cache_ttl_s <= 0:
            return
        self._cache[key] = (time.monotonic() + self.cache_ttl_s, value)
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    async def close(self) -> None:
        await self.base.close()
