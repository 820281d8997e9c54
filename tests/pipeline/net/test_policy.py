"""Address policy and the guarded resolver: pure unit tests, no connections."""

import asyncio
import socket

import pytest

from pipeline.net import AddressPolicy, BlockedAddressError, GuardedResolver, StaticResolver

REFUSED_BY_DEFAULT = [
    "127.0.0.1",
    "127.0.0.2",
    "10.0.0.5",
    "172.16.3.4",
    "192.168.1.10",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # carrier-grade NAT
    "0.0.0.0",
    "224.0.0.1",  # multicast: is_global alone would let it through
    "255.255.255.255",
    "::1",
    "::",
    "fe80::1",
    "fe80::1%eth0",
    "fc00::1",
    "ff02::1",
    "::ffff:127.0.0.1",  # IPv4-mapped loopback
    "::ffff:10.0.0.1",
    "2002:7f00:1::",  # 6to4 wrapping 127.0.0.1
    "not-an-ip",
    "",
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("ip", REFUSED_BY_DEFAULT)
def test_default_policy_refuses_non_public(ip):
    assert not AddressPolicy().allows(ip)


@pytest.mark.parametrize("ip", PUBLIC)
def test_default_policy_allows_public(ip):
    assert AddressPolicy().allows(ip)


def test_allow_networks_widen_exactly():
    policy = AddressPolicy(["127.0.0.1/32", "10.0.0.0/8", "fd00::/8"])
    assert policy.allows("127.0.0.1")
    assert policy.allows("::ffff:127.0.0.1")
    assert not policy.allows("127.0.0.2")
    assert policy.allows("10.200.1.1")
    assert policy.allows("fd12::1")
    assert not policy.allows("192.168.0.1")
    assert policy.allows("8.8.8.8")  # public stays allowed


@pytest.mark.parametrize("bad", [["10.0.0.0/33"], ["banana"], ["10.0.0.0/8", "fd00::/200"], [5]])
def test_bad_cidr_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="invalid network"):
        AddressPolicy(bad)


def test_single_string_is_rejected():
    with pytest.raises(ValueError, match="list of CIDR"):
        AddressPolicy("127.0.0.1/32")


def _hosts(results):
    return [r["host"] for r in results]


def test_guarded_resolver_filters_and_refuses():
    async def main():
        base = StaticResolver(
            {"mixed.test": ["10.0.0.5", "127.0.0.1"], "evil.test": ["10.0.0.5", "192.168.1.1"]}
        )
        guard = GuardedResolver(AddressPolicy(["127.0.0.1/32"]), base)
        assert _hosts(await guard.resolve("mixed.test", 80)) == ["127.0.0.1"]
        with pytest.raises(BlockedAddressError) as info:
            await guard.resolve("evil.test", 80)
        assert info.value.addresses == ["10.0.0.5", "192.168.1.1"]
        with pytest.raises(OSError):
            await guard.resolve("unknown.test", 80)

    asyncio.run(main())


class CountingResolver(StaticResolver):
    """StaticResolver that answers from a list of tables, one per call (DNS rebinding)."""

    def __init__(self, answers):
        super().__init__({})
        self.answers = answers
        self.calls = 0

    async def resolve(self, host, port=0, family=socket.AF_UNSPEC):
        table = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        await asyncio.sleep(0.01)
        return await StaticResolver(table).resolve(host, port, family)


def test_rebinding_answer_is_refused_when_resolved_again():
    async def main():
        flip = CountingResolver([{"rebind.test": ["127.0.0.1"]}, {"rebind.test": ["127.0.0.2"]}])
        guard = GuardedResolver(AddressPolicy(["127.0.0.1/32"]), flip, cache_ttl_s=0)
        assert _hosts(await guard.resolve("rebind.test", 80)) == ["127.0.0.1"]
        with pytest.raises(BlockedAddressError):
            await guard.resolve("rebind.test", 80)

    asyncio.run(main())


def test_concurrent_lookups_share_one_query_and_cache():
    async def main():
        base = CountingResolver([{"a.test": ["127.0.0.1"]}])
        guard = GuardedResolver(AddressPolicy(["127.0.0.1/32"]), base)
        results = await asyncio.gather(*(guard.resolve("a.test", 80) for _ in range(50)))
        assert all(_hosts(r) == ["127.0.0.1"] for r in results)
        await guard.resolve("A.TEST", 80)
        assert base.calls == 1

    asyncio.run(main())


def test_static_resolver_rejects_bad_table_and_unknown_names():
    with pytest.raises(ValueError):
        StaticResolver({"x.test": ["999.1.1.1"]})

    async def main():
        r = StaticResolver({"X.test.": "127.0.0.1"})
        assert _hosts(await r.resolve("x.TEST", 80)) == ["127.0.0.1"]
        with pytest.raises(OSError):
            await r.resolve("y.test", 80)

    asyncio.run(main())
