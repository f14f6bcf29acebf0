"""Subnets, gateways, addresses and VLANs (services/nameserver/addressing.py)."""

from __future__ import annotations

import ipaddress

import pytest

from services.common.errors import FailedPrecondition, InvalidArgument
from services.nameserver import addressing

NET = ipaddress.IPv4Network("10.20.0.0/29")  # hosts .1 - .6


@pytest.mark.parametrize(
    ("cidr", "says"),
    [
        ("10.20.0.1/24", "did you mean 10.20.0.0/24"),
        ("10.20.0.0", "needs a prefix length"),
        ("10.0.0.0/31", "/8 to /30"),
        ("10.0.0.0/7", "/8 to /30"),
        ("fd00::/64", "only IPv4"),
        ("ten.twenty/24", "not an IPv4 network"),
    ],
)
def test_bad_cidrs_say_what_is_wrong(cidr: str, says: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        addressing.parse_cidr(cidr)
    assert says in info.value.message and info.value.reason == "INVALID_CIDR"


def test_gateway_defaults_to_the_first_address_and_must_be_a_host_of_the_net() -> None:
    assert addressing.gateway_of(NET, "") == "10.20.0.1"
    assert addressing.gateway_of(NET, "10.20.0.6") == "10.20.0.6"
    for bad in ("10.20.0.0", "10.20.0.7", "10.20.1.1", "nonsense"):
        with pytest.raises(InvalidArgument):
            addressing.gateway_of(NET, bad)


def test_first_free_address_skips_gateway_and_leases() -> None:
    assert addressing.first_free_address(NET, "10.20.0.1", []) == "10.20.0.2"
    assert addressing.first_free_address(NET, "10.20.0.1", ["10.20.0.2", "10.20.0.4"]) == "10.20.0.3"
    with pytest.raises(FailedPrecondition) as full:
        addressing.first_free_address(NET, "10.20.0.1", [f"10.20.0.{i}" for i in range(2, 7)])
    assert full.value.reason == "NO_FREE_ADDRESS"


def test_vlans() -> None:
    addressing.check_vlan(0)
    addressing.check_vlan(4095)
    with pytest.raises(InvalidArgument):
        addressing.check_vlan(4096)
    assert addressing.first_free_vlan([]) == 2
    assert addressing.first_free_vlan([2, 3, 5]) == 4
    with pytest.raises(FailedPrecondition):
        addressing.first_free_vlan(range(2, 4095))


def test_a_network_without_a_cidr_gets_the_first_subnet_of_the_pool_that_overlaps_nothing() -> None:
    # Prepare
    pool = addressing.SubnetPool.parse("10.128.0.0/22", 24)  # four /24s
    taken = [ipaddress.IPv4Network(c) for c in ("10.128.0.0/24", "10.128.1.64/26", "192.168.0.0/16")]

    # Execute / Assert: a /24 partly used by a smaller network is not free either
    assert str(pool.first_free([])) == "10.128.0.0/24"
    assert str(pool.first_free(taken)) == "10.128.2.0/24"
    assert str(pool.first_free([ipaddress.IPv4Network("10.128.0.0/23")])) == "10.128.2.0/24"  # a wider network covers two
    with pytest.raises(FailedPrecondition) as full:
        pool.first_free([ipaddress.IPv4Network("10.0.0.0/8")])
    assert full.value.reason == "NO_FREE_SUBNET" and "give the network a cidr" in full.value.message


def test_a_pool_is_checked_when_the_nameserver_starts() -> None:
    assert addressing.SubnetPool.parse(addressing.DEFAULT_POOL, addressing.DEFAULT_POOL_PREFIX).prefix == 24
    for cidr, prefix in (("10.128.0.0/16", 12), ("10.128.0.0/16", 31), ("10.128.0.1/16", 24)):
        with pytest.raises(InvalidArgument):
            addressing.SubnetPool.parse(cidr, prefix)
