"""IPv4 subnets, gateways, addresses and VLAN ids: the checks and choices behind network
leases. Pure: the leases themselves are etcd keys (networks.py)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from services.common.errors import FailedPrecondition, InvalidArgument

MIN_PREFIX, MAX_PREFIX = 8, 30
DEFAULT_POOL, DEFAULT_POOL_PREFIX = "10.128.0.0/9", 24
"""Where a network created without a cidr gets one (a site sets its own: nameserver --network-pool)."""
# 0 and 4095 are reserved by 802.1Q; 1 is the default VLAN of most switches: never chosen.
FIRST_CHOSEN_VLAN, LAST_CHOSEN_VLAN = 2, 4094
MAX_VLAN = 4095


def parse_cidr(cidr: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError as exc:
        raise InvalidArgument(f"cidr {cidr!r} is not an IPv4 network like 10.20.0.0/24", reason="INVALID_CIDR") from exc
    if not isinstance(net, ipaddress.IPv4Network):
        raise InvalidArgument(f"cidr {cidr!r}: only IPv4 networks are supported", reason="INVALID_CIDR")
    if "/" not in cidr:
        raise InvalidArgument(f"cidr {cidr!r} needs a prefix length, e.g. {cidr.strip()}/24", reason="INVALID_CIDR")
    if str(net) != cidr.strip():
        raise InvalidArgument(f"cidr {cidr!r} has host bits set: did you mean {net}?", reason="INVALID_CIDR")
    if not MIN_PREFIX <= net.prefixlen <= MAX_PREFIX:
        raise InvalidArgument(
            f"cidr {cidr!r}: the prefix length must be /{MIN_PREFIX} to /{MAX_PREFIX} (room for a gateway and hosts)",
            reason="INVALID_CIDR",
        )
    return net


def check_host_address(net: ipaddress.IPv4Network, address: str, what: str) -> ipaddress.IPv4Address:
    """An address usable by a host of net (not its network or broadcast address)."""
    try:
        ip = ipaddress.IPv4Address(address.strip())
    except ValueError as exc:
        raise InvalidArgument(f"{what} {address!r} is not an IPv4 address", reason="INVALID_ADDRESS") from exc
    if ip not in net:
        raise InvalidArgument(f"{what} {ip} is not in {net}", reason="INVALID_ADDRESS")
    if ip in (net.network_address, net.broadcast_address):
        raise InvalidArgument(f"{what} {ip} is the network or broadcast address of {net}", reason="INVALID_ADDRESS")
    return ip


def gateway_of(net: ipaddress.IPv4Network, gateway: str) -> str:
    """The gateway asked for (checked), or the network's first address."""
    if gateway:
        return str(check_host_address(net, gateway, "gateway"))
    return str(net.network_address + 1)


def first_free_address(net: ipaddress.IPv4Network, gateway: str, taken: Iterable[str]) -> str:
    """The lowest host address of net that is neither the gateway nor taken."""
    used = {*taken, gateway}
    for ip in net.hosts():
        if str(ip) not in used:
            return str(ip)
    raise FailedPrecondition(f"network {net} has no free address left", reason="NO_FREE_ADDRESS")


def check_vlan(vlan: int) -> None:
    """0 asks for one to be chosen; 1-4095 ask for that one."""
    if not 0 <= vlan <= MAX_VLAN:
        raise InvalidArgument(f"vlan must be 1-{MAX_VLAN} (or 0 to have one chosen), not {vlan}", reason="INVALID_VLAN")


def first_free_vlan(taken: Iterable[int]) -> int:
    used = set(taken)
    for vlan in range(FIRST_CHOSEN_VLAN, LAST_CHOSEN_VLAN + 1):
        if vlan not in used:
            return vlan
    raise FailedPrecondition("every VLAN id is leased", reason="NO_FREE_VLAN")


@dataclass(frozen=True)
class SubnetPool:
    """The site's private range for networks created without a cidr: each gets the first
    /``prefix`` of ``network`` that overlaps no other network (so that their traffic could be
    routed one day without renumbering, even though VLANs already isolate them)."""

    network: ipaddress.IPv4Network
    prefix: int

    @classmethod
    def parse(cls, cidr: str, prefix: int) -> SubnetPool:
        net = parse_cidr(cidr)
        if not max(MIN_PREFIX, net.prefixlen) <= prefix <= MAX_PREFIX:
            raise InvalidArgument(f"the subnets of pool {net} must be /{max(MIN_PREFIX, net.prefixlen)} to /{MAX_PREFIX}, not /{prefix}",
                                  reason="INVALID_CIDR")
        return cls(net, prefix)

    def first_free(self, taken: Iterable[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
        small: set[ipaddress.IPv4Network] = set()  # taken at or below the pool's prefix: the /prefix holding each
        large: list[ipaddress.IPv4Network] = []  # taken wider than one /prefix (and overlapping the pool)
        for net in taken:
            if not net.overlaps(self.network):
                continue
            if net.prefixlen >= self.prefix:
                small.add(net.supernet(new_prefix=self.prefix))
            else:
                large.append(net)
        for subnet in self.network.subnets(new_prefix=self.prefix):
            if subnet not in small and not any(subnet.subnet_of(big) for big in large):
                return subnet
        raise FailedPrecondition(
            f"every /{self.prefix} of the site's network pool {self.network} is in use: give the network a cidr",
            reason="NO_FREE_SUBNET",
        )
