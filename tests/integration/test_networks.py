"""Networks and interfaces through the public API on the fake-driver stack: unique VLAN, MAC and
address leases in etcd, state, ownership, cleanup with the VM."""

from __future__ import annotations

import ipaddress
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from clients.wnodes_client import Client, WnodesRpcError
from deploy.stack.stack import Stack
from tests import stacks
from wnodes.v1 import network_pb2

pytestmark = pytest.mark.integration
NetState = network_pb2.Network.State
NicState = network_pb2.NetworkInterface.State


def fails(call: object, code: grpc.StatusCode, reason: str) -> WnodesRpcError:
    with pytest.raises(WnodesRpcError) as info:
        call()  # type: ignore[operator]
    assert (info.value.code, info.value.reason) == (code, reason), info.value
    return info.value


def leases(stack: Stack, kind: str) -> dict[str, object]:
    state = stack.state
    assert state is not None
    return stacks.etcd_prefix(state, f"/leases/{kind}/")


def test_network_and_interfaces(client: Client, fake_stack: Stack) -> None:
    # Prepare
    vm = client.create_vm("tiny").result(timeout=60)
    network = client.create_network("10.30.0.0/29", title="lab", vlan=300)
    assert (network.vlan, network.cidr, network.gateway) == (300, "10.30.0.0/29", "10.30.0.1")
    assert network.allocation == network_pb2.Network.Allocation.DYNAMIC and network.state == NetState.ACTIVE

    # Execute: two dynamic interfaces and one asked-for address
    first = client.create_network_interface(vm.name, network.name)
    second = client.create_network_interface(vm.name, network.name)
    third = client.create_network_interface(vm.name, network.name, ip_address="10.30.0.6")

    # Assert
    assert [i.ip_address for i in (first, second, third)] == ["10.30.0.2", "10.30.0.3", "10.30.0.6"]
    assert len({i.mac_address for i in (first, second, third)} | {vm.mac_address}) == 4
    assert first.state == NicState.ACTIVE and first.virtual_machine == vm.name
    fails(lambda: client.create_network_interface(vm.name, network.name, ip_address="10.30.0.6"), grpc.StatusCode.ALREADY_EXISTS, "ADDRESS_IN_USE")
    fails(lambda: client.create_network_interface(vm.name, network.name, ip_address="10.30.0.1"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ADDRESS")
    fails(lambda: client.create_network_interface(vm.name, network.name, ip_address="10.31.0.2"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ADDRESS")
    shown = client.get_vm(vm.name)
    assert [(n.network, n.ip_address, n.vlan) for n in shown.networks] == [(network.name, ip, 300) for ip in ("10.30.0.2", "10.30.0.3", "10.30.0.6")]
    assert client.get_network(network.name).interface_count == 3
    assert {i.name for i in client.list_network_interfaces(network=network.name)} == {first.name, second.name, third.name}
    assert {i.name for i in client.list_network_interfaces(vm=vm.name, page_size=1)} == {first.name, second.name, third.name}
    assert set(leases(fake_stack, f"addresses/{network.name.removeprefix('networks/')}").values()) == {
        i.name.removeprefix("networkInterfaces/") for i in (first, second, third)
    }

    # down / up: interfaces follow
    assert client.down_network(network.name).state == NetState.INACTIVE
    assert client.get_network_interface(first.name).state == NicState.INACTIVE
    assert client.up_network(network.name).state == NetState.ACTIVE

    # a network in use cannot go; deleting an interface frees its address for the next one
    fails(lambda: client.delete_network(network.name), grpc.StatusCode.FAILED_PRECONDITION, "NETWORK_IN_USE")
    client.delete_network_interface(second.name)
    fails(lambda: client.get_network_interface(second.name), grpc.StatusCode.NOT_FOUND, "NETWORK_INTERFACE_NOT_FOUND")
    assert client.create_network_interface(vm.name, network.name).ip_address == "10.30.0.3"

    # deleting the VM removes its interfaces and frees their leases
    client.delete_vm(vm.name).result(timeout=60)
    assert list(client.list_network_interfaces(network=network.name)) == []
    assert client.get_network(network.name).interface_count == 0
    client.delete_network(network.name)
    assert "0300" not in {k.rsplit("/", 1)[-1] for k in leases(fake_stack, "vlans")}
    assert not leases(fake_stack, "macs") and not leases(fake_stack, f"addresses/{network.name.removeprefix('networks/')}")


def test_vlans_are_leased_uniquely(client: Client) -> None:
    taken = client.create_network("10.40.0.0/24", vlan=400)
    fails(lambda: client.create_network("10.41.0.0/24", vlan=400), grpc.StatusCode.ALREADY_EXISTS, "VLAN_IN_USE")
    with ThreadPoolExecutor(max_workers=6) as pool:
        chosen = list(pool.map(lambda i: client.create_network(f"10.50.{i}.0/24"), range(6)))
    assert len({n.vlan for n in chosen}) == 6 and all(2 <= n.vlan <= 4094 and n.vlan != 400 for n in chosen)
    for n in [taken, *chosen]:
        client.delete_network(n.name)


def test_static_networks_need_addresses(client: Client) -> None:
    vm = client.create_vm("tiny").result(timeout=60)
    network = client.create_network("192.168.77.0/24", allocation="STATIC", gateway="192.168.77.254")
    fails(lambda: client.create_network_interface(vm.name, network.name), grpc.StatusCode.INVALID_ARGUMENT, "ADDRESS_REQUIRED")
    assert client.create_network_interface(vm.name, network.name, ip_address="192.168.77.10").ip_address == "192.168.77.10"
    client.delete_vm(vm.name).result(timeout=60)
    client.delete_network(network.name)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"cidr": "10.0.0.1/24"}, "INVALID_CIDR"),
        ({"cidr": "10.0.0.0/24", "vlan": 5000}, "INVALID_VLAN"),
        ({"cidr": "10.0.0.0/24", "gateway": "10.0.1.1"}, "INVALID_ADDRESS"),
    ],
)
def test_bad_networks_are_invalid(client: Client, kwargs: dict[str, object], reason: str) -> None:
    fails(lambda: client.create_network(**kwargs), grpc.StatusCode.INVALID_ARGUMENT, reason)  # type: ignore[arg-type]


def test_others_networks_are_not_found(client: Client, fake_stack: Stack) -> None:
    vm = client.create_vm("tiny").result(timeout=60)
    network = client.create_network("10.60.0.0/24")
    interface = client.create_network_interface(vm.name, network.name)
    state = fake_stack.state
    assert state is not None
    with Client(state.gateway, user="bob", vo="cms") as bob:
        assert list(bob.list_networks()) == [] and list(bob.list_network_interfaces()) == []
        for call in (lambda: bob.get_network(network.name), lambda: bob.delete_network(network.name),
                     lambda: bob.down_network(network.name), lambda: bob.create_network_interface(vm.name, network.name)):  # fmt: skip
            fails(call, grpc.StatusCode.NOT_FOUND, "NETWORK_NOT_FOUND")
        for call in (lambda: bob.get_network_interface(interface.name), lambda: bob.delete_network_interface(interface.name)):
            fails(call, grpc.StatusCode.NOT_FOUND, "NETWORK_INTERFACE_NOT_FOUND")
    assert client.create_network("10.61.0.0/24", request_id="net-retry").name == client.create_network("10.61.0.0/24", request_id="net-retry").name
    client.delete_vm(vm.name).result(timeout=60)
    for n in client.list_networks():
        client.delete_network(n.name)


def test_a_network_without_a_cidr_gets_a_free_subnet_of_the_sites_pool(client: Client, fake_stack: Stack) -> None:
    # Prepare: a network given by hand inside the pool, which the chosen ones must avoid
    pool = ipaddress.IPv4Network("10.128.0.0/9")  # the default pool (nameserver --network-pool)
    by_hand = client.create_network("10.128.0.0/23")

    # Execute: concurrent creates without a cidr
    with ThreadPoolExecutor(max_workers=4) as workers:
        chosen = list(workers.map(lambda i: client.create_network(title=f"auto-{i}"), range(4)))

    # Assert: four distinct /24s of the pool, none overlapping the other network, each leased
    subnets = [ipaddress.IPv4Network(n.cidr) for n in chosen]
    assert len(set(subnets)) == 4 and all(s.prefixlen == 24 and s.subnet_of(pool) for s in subnets)
    assert not any(s.overlaps(ipaddress.IPv4Network(by_hand.cidr)) for s in subnets)
    assert all(n.gateway == str(s.network_address + 1) for n, s in zip(chosen, subnets, strict=True))
    interface_vm = client.create_vm("tiny").result(timeout=60)
    assert ipaddress.IPv4Address(client.create_network_interface(interface_vm.name, chosen[0].name).ip_address) in subnets[0]
    assert {k.rsplit("/", 1)[-1] for k in leases(fake_stack, "subnets")} == {n.cidr.replace("/", "_") for n in chosen}
    fails(lambda: client.create_network(gateway="10.128.9.1"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ADDRESS")

    # deleting a network frees its subnet for the next one
    client.delete_vm(interface_vm.name).result(timeout=60)
    for n in [by_hand, *chosen]:
        client.delete_network(n.name)
    assert leases(fake_stack, "subnets") == {}
