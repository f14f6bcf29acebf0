"""Networks and interfaces on the in-memory store: VLAN and subnet leases (a /24 of the site's
pool when no cidr is given), static and dynamic addresses, MAC and address leases, ownership,
and deletes that free what they held."""

from __future__ import annotations

import pytest

from services.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NetworkInterfaceNotFound, NetworkNotFound
from services.common.records import NetworkState
from services.nameserver import convert
from services.nameserver.networks import NetworkSpec, parse_interface_name, parse_network_name
from tests.unit.nameserver.conftest import ADMIN, ALICE, BOB, Farm


def _spec(title: str = "net", vlan: int = 0, cidr: str = "", gateway: str = "", allocation: str = "") -> NetworkSpec:
    return NetworkSpec(title=title, vlan=vlan, cidr=cidr, gateway=gateway, allocation=allocation)


# --- networks -------------------------------------------------------------------------------


async def test_networks_without_a_cidr_get_the_next_free_24_of_the_pool_and_a_vlan(farm: Farm) -> None:
    # Prepare: a network that takes 10.128.1.0/24 by hand
    networks = farm.registry.networks
    manual = await networks.create(_spec(cidr="10.128.1.0/24", vlan=100), ALICE, "")
    # Execute
    first, second = await networks.create(_spec(), ALICE, ""), await networks.create(_spec(), BOB, "")
    # Assert
    assert (manual.cidr, manual.gateway, manual.vlan, manual.subnet_leased) == ("10.128.1.0/24", "10.128.1.1", 100, False)
    assert (first.cidr, first.gateway, first.vlan, first.allocation) == ("10.128.0.0/24", "10.128.0.1", 2, "DYNAMIC")
    assert (second.cidr, second.vlan) == ("10.128.2.0/24", 3)
    assert await farm.store.get(farm.keys.subnet_lease(first.cidr)) is not None
    # Execute: deleting frees the VLAN and the chosen subnet for the next one
    await networks.delete(first.id, ALICE)
    assert await farm.store.get(farm.keys.subnet_lease(first.cidr)) is None
    again = await networks.create(_spec(), ALICE, "")
    assert (again.cidr, again.vlan) == ("10.128.0.0/24", 2)


async def test_a_network_is_created_once_per_request_id_and_a_vlan_once(farm: Farm) -> None:
    networks = farm.registry.networks
    first = await networks.create(_spec(vlan=7), ALICE, "n-1")
    assert (await networks.create(_spec(vlan=7), ALICE, "n-1")).id == first.id
    with pytest.raises(AlreadyExists) as exc:
        await networks.create(_spec(vlan=7), ALICE, "n-2")
    assert exc.value.reason == "VLAN_IN_USE"


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        (_spec(vlan=5000), "INVALID_VLAN"),
        (_spec(cidr="10.0.0.1/24"), "INVALID_CIDR"),
        (_spec(cidr="fd00::/64"), "INVALID_CIDR"),
        (_spec(gateway="10.0.0.1"), "INVALID_ADDRESS"),
        (_spec(cidr="10.0.0.0/24", gateway="10.0.1.1"), "INVALID_ADDRESS"),
        (_spec(allocation="SOMETIMES"), "INVALID_ALLOCATION"),
        (_spec(title="x" * 300), "INVALID_TITLE"),
    ],
)
async def test_a_network_is_refused_for_what_it_asks(farm: Farm, spec: NetworkSpec, reason: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        await farm.registry.networks.create(spec, ALICE, "")
    assert exc.value.reason == reason


async def test_networks_are_their_owners_and_lists_are_paged(farm: Farm) -> None:
    # Prepare
    networks = farm.registry.networks
    mine = {(await networks.create(_spec(f"n{i}"), ALICE, "")).id for i in range(3)}
    theirs = await networks.create(_spec(), BOB, "")
    # Execute
    seen, token = [], ""
    while True:
        page, token = await networks.list_networks(ALICE, 2, token)
        seen += [n.id for n in page]
        if not token:
            break
    # Assert
    assert sorted(seen) == sorted(mine)
    assert len((await networks.list_networks(ADMIN, 0, ""))[0]) == 4
    for refused in (networks.get(theirs.id, ALICE), networks.delete(theirs.id, ALICE), networks.set_state(theirs.id, ALICE, up=False)):
        with pytest.raises(NetworkNotFound):
            await refused


async def test_a_network_goes_down_and_up(farm: Farm) -> None:
    network = await farm.registry.networks.create(_spec(), ALICE, "")
    assert (await farm.registry.networks.set_state(network.id, ALICE, up=False)).state == NetworkState.INACTIVE
    assert (await farm.registry.networks.set_state(network.id, ALICE, up=True)).state == NetworkState.ACTIVE


@pytest.mark.parametrize(("parse", "name"), [(parse_network_name, "networks/net-1"), (parse_interface_name, "networkInterfaces/nic-zz")])
def test_network_and_interface_names_are_checked(parse: object, name: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        parse(name)  # type: ignore[operator]
    assert exc.value.reason == "INVALID_NAME"


# --- interfaces -----------------------------------------------------------------------------


async def test_dynamic_interfaces_lease_the_next_address_and_a_mac(farm: Farm) -> None:
    # Prepare
    await farm.add_host("hv1")
    vm = await farm.running()
    network = await farm.registry.networks.create(_spec(cidr="10.9.0.0/29"), ALICE, "")
    networks = farm.registry.networks
    # Execute: 10.9.0.1 is the gateway; .2 to .6 are the hosts left
    interfaces = [await networks.create_interface(vm.id, network.id, "", ALICE, "") for _ in range(5)]
    # Assert
    assert [i.ip_address for i in interfaces] == ["10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"]
    assert len({i.mac_address for i in interfaces}) == 5
    for i in interfaces:
        assert await farm.store.get(farm.keys.mac_lease(i.mac_address)) is not None
        assert await farm.store.get(farm.keys.address_lease(network.id, i.ip_address)) is not None
    with pytest.raises(FailedPrecondition) as exc:
        await networks.create_interface(vm.id, network.id, "", ALICE, "")
    assert exc.value.reason == "NO_FREE_ADDRESS"
    assert (await networks.get(network.id, ALICE)).interface_count == 5
    listed = [(n.network, n.ip_address) for n in convert.vm_to_proto(await farm.vm(vm.id)).networks]
    assert listed == [(network.name, i.ip_address) for i in interfaces]
    # deleting one frees its address for the next
    await networks.delete_interface(interfaces[1].id, ALICE)
    assert await farm.store.get(farm.keys.mac_lease(interfaces[1].mac_address)) is None
    assert (await networks.create_interface(vm.id, network.id, "", ALICE, "")).ip_address == "10.9.0.3"


async def test_static_networks_need_the_address_and_lease_it_once(farm: Farm) -> None:
    # Prepare
    await farm.add_host("hv1")
    vm = await farm.running()
    networks = farm.registry.networks
    network = await networks.create(_spec(cidr="10.9.0.0/24", gateway="10.9.0.254", allocation="STATIC"), ALICE, "")
    # Execute / Assert
    with pytest.raises(InvalidArgument) as exc:
        await networks.create_interface(vm.id, network.id, "", ALICE, "")
    assert exc.value.reason == "ADDRESS_REQUIRED"
    interface = await networks.create_interface(vm.id, network.id, "10.9.0.10", ALICE, "i-1")
    assert interface.ip_address == "10.9.0.10"
    assert (await networks.create_interface(vm.id, network.id, "10.9.0.10", ALICE, "i-1")).id == interface.id, "a retry"
    with pytest.raises(AlreadyExists) as taken:
        await networks.create_interface(vm.id, network.id, "10.9.0.10", ALICE, "i-2")
    assert taken.value.reason == "ADDRESS_IN_USE"
    for address in ("10.9.0.254", "10.9.1.1", "10.9.0.255", "nonsense"):
        with pytest.raises(InvalidArgument) as bad:
            await networks.create_interface(vm.id, network.id, address, ALICE, "")
        assert bad.value.reason == "INVALID_ADDRESS", address


async def test_a_network_with_interfaces_is_not_deleted(farm: Farm) -> None:
    # Prepare
    await farm.add_host("hv1")
    vm = await farm.running()
    networks = farm.registry.networks
    network = await networks.create(_spec(), ALICE, "")
    interface = await networks.create_interface(vm.id, network.id, "", ALICE, "")
    # Execute / Assert
    with pytest.raises(FailedPrecondition) as exc:
        await networks.delete(network.id, ALICE)
    assert exc.value.reason == "NETWORK_IN_USE"
    await networks.delete_interface(interface.id, ALICE)
    await networks.delete(network.id, ALICE)
    with pytest.raises(NetworkNotFound):
        await networks.get(network.id, ALICE)
    assert await farm.store.get(farm.keys.vlan_lease(network.vlan)) is None


async def test_interfaces_are_their_owners_and_listed_by_network_or_vm(farm: Farm) -> None:
    # Prepare
    await farm.add_host("hv1")
    vm1, vm2 = await farm.running(), await farm.running()
    networks = farm.registry.networks
    net_a, net_b = await networks.create(_spec("a"), ALICE, ""), await networks.create(_spec("b"), ALICE, "")
    on_a = await networks.create_interface(vm1.id, net_a.id, "", ALICE, "")
    await networks.create_interface(vm2.id, net_a.id, "", ALICE, "")
    await networks.create_interface(vm1.id, net_b.id, "", ALICE, "")
    # Execute / Assert
    assert len((await networks.list_interfaces(ALICE, 0, "", network_id=net_a.id))[0]) == 2
    assert len((await networks.list_interfaces(ALICE, 0, "", vm_id=vm1.id))[0]) == 2
    assert (await networks.list_interfaces(ALICE, 0, "", net_a.id, vm1.id))[0][0].id == on_a.id
    assert (await networks.list_interfaces(BOB, 0, "", net_a.id))[0] == []
    with pytest.raises(NetworkInterfaceNotFound):
        await networks.get_interface(on_a.id, BOB)
    with pytest.raises(NetworkInterfaceNotFound):
        await networks.delete_interface(on_a.id, BOB)
    theirs = await farm.running(BOB)
    with pytest.raises(NetworkNotFound):
        await networks.create_interface(theirs.id, net_a.id, "", BOB, "")
    await networks.set_state(net_a.id, ALICE, up=False)
    assert await networks.network_states({net_a.id, net_b.id, "net-0000000000"}) == {
        net_a.id: NetworkState.INACTIVE, net_b.id: NetworkState.ACTIVE, "net-0000000000": NetworkState.INACTIVE,
    }  # fmt: skip


async def test_deleting_a_vm_removes_its_interfaces_and_frees_their_leases(farm: Farm) -> None:
    # Prepare
    await farm.add_host("hv1")
    vm = await farm.running()
    networks = farm.registry.networks
    network = await networks.create(_spec(), ALICE, "")
    interface = await networks.create_interface(vm.id, network.id, "", ALICE, "")
    # Execute
    await farm.registry.delete_vm(vm.id, ALICE, "")
    # Assert
    with pytest.raises(NetworkInterfaceNotFound):
        await networks.get_interface(interface.id, ALICE)
    assert (await networks.get(network.id, ALICE)).interface_count == 0
    assert await farm.store.get(farm.keys.address_lease(network.id, interface.ip_address)) is None
    assert await farm.store.get(farm.keys.mac_lease(interface.mac_address)) is None
    await networks.delete(network.id, ALICE)


async def test_a_vm_that_is_going_away_gets_no_interface(farm: Farm) -> None:
    await farm.add_host("hv1")
    vm = await farm.running()
    network = await farm.registry.networks.create(_spec(), ALICE, "")
    await farm.registry.delete_vm(vm.id, ALICE, "")
    with pytest.raises(FailedPrecondition) as exc:
        await farm.registry.networks.create_interface(vm.id, network.id, "", ALICE, "")
    assert exc.value.reason == "INVALID_VM_STATE"
