"""Pure pieces: text parsing/rendering round trips, content negotiation, the files a site
writes (sizes, users), and the protobuf -> OCCI state mapping."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.errors import InvalidArgument
from services.gateway.occi import infrastructure as infra
from services.gateway.occi import negotiation, proto_convert, text_parsing, text_rendering
from services.gateway.occi.http_errors import NotAcceptable
from services.gateway.occi.site_users import SiteUsers, write_user_file
from services.gateway.occi.templates import DEFAULT_SIZES, load_sizes, os_tpl_term
from wnodes.v1 import network_pb2, virtual_machine_pb2, volume_pb2


def test_category_rendering_parses_back() -> None:
    for cat in (*infra.KINDS, *infra.MIXINS, *infra.ACTIONS):
        name, value = text_rendering.category_line(cat)
        parsed = text_parsing.parse_lines([(name, value)]).categories[0]
        assert (parsed.scheme, parsed.term, parsed.cls) == (cat.scheme, cat.term, cat.category_class)
        assert parsed.location == getattr(cat, "location", "")


def test_values_quotes_and_escapes_round_trip() -> None:
    for value in ("plain", 'with "quotes"', "back\\slash", "a, b; c=d", 3, 2.5, True, False):
        name, line = "X-OCCI-Attribute", f"x.y={text_rendering.value_literal(value)}"
        assert text_parsing.parse_lines([(name, line)]).attributes["x.y"] == value


def test_comma_lists_and_repeated_headers_are_the_same() -> None:
    listed = text_parsing.parse_headers([("Category", 'a; scheme="http://x#", b; scheme="http://x#"'), ("X-OCCI-Attribute", 'p="1,2", q=3')])
    repeated = text_parsing.parse_headers([("Category", 'a; scheme="http://x#"'), ("category", 'b; scheme="http://x#"'),
                                           ("X-OCCI-Attribute", 'p="1,2"'), ("x-occi-attribute", "q=3")])
    assert listed == repeated
    assert listed.attributes == {"p": "1,2", "q": 3}


@pytest.mark.parametrize("line", ["Category: ", 'Category: a; scheme="x', "Category: a; scheme", 'Link: /x; rel="y"',
                                  "X-OCCI-Attribute: novalue", "X-OCCI-Attribute: a=b c", 'X-OCCI-Attribute: a="1", a="2"',
                                  'Category: a; scheme="http://x#"; class="thing"'])
def test_malformed_lines_name_the_problem(line: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        text_parsing.parse_body(line + "\r\n")
    assert info.value.message


def test_negotiation() -> None:
    assert negotiation.choose(None, False).media_type == "text/plain"
    assert negotiation.choose("text/occi;q=0.2, application/occi+json", False).media_type == "application/occi+json"
    assert negotiation.choose("text/uri-list, text/plain;q=0.1", False).media_type == "text/plain"
    assert negotiation.choose("text/uri-list", True).media_type == "text/uri-list"
    with pytest.raises(NotAcceptable):
        negotiation.choose("image/png", True)
    with pytest.raises(InvalidArgument):
        negotiation.choose("text/uri-list", False)
    with pytest.raises(InvalidArgument):
        negotiation.request_type("application/xml", True)


def test_sizes_file(tmp_path: Path) -> None:
    assert load_sizes(None) == DEFAULT_SIZES
    f = tmp_path / "sizes.toml"
    f.write_text('[sizes.tiny]\ncores = 1\nmemory_gib = 0.25\n[sizes.big]\ncores = 8\nmemory_gib = 16\ntitle = "big one"\n')
    assert [(s.term, s.cores, s.memory_gib, s.title) for s in load_sizes(f)] == [("tiny", 1, 0.25, "tiny: 1 cores, 0.25 GiB"), ("big", 8, 16.0, "big one")]
    f.write_text("[sizes.Bad]\ncores = 0\n")
    with pytest.raises(InvalidArgument):
        load_sizes(f)


def test_user_file_is_private_and_hashed(tmp_path: Path) -> None:
    f = tmp_path / "users.toml"
    write_user_file(f, [("alice", "atlas", "pw", "/CN=Alice"), ("bob", "cms", "", "")], rounds=4)
    assert f.stat().st_mode & 0o077 == 0
    assert "pw\"" not in f.read_text()
    users = SiteUsers.load(f)
    assert users.by_name["alice"].vo == "atlas" and users.by_dn["/CN=Alice"].name == "alice"
    assert users.by_name["bob"].password_bcrypt == ""


def test_os_tpl_terms_are_valid() -> None:
    assert os_tpl_term("debian-12.1") == "debian-12_1"
    assert os_tpl_term("7zip") == "img_7zip"


@pytest.mark.parametrize(("proto_state", "occi_state", "message"), [
    ("ACTIVE", "active", "running"), ("PENDING", "inactive", "starting"), ("SCHEDULED", "inactive", "starting"),
    ("STARTING", "inactive", "starting"), ("FAILED", "error", "failed"), ("UNKNOWN", "error", "stopped reporting"),
])
def test_compute_state_mapping(proto_state: str, occi_state: str, message: str) -> None:
    vm = virtual_machine_pb2.VirtualMachine(name="virtualMachines/vm-1", image="images/tiny", vcpu_count=2, memory_mib=1536,
                                            state=virtual_machine_pb2.VirtualMachine.State.Value(proto_state), hostname="vwn-1",
                                            labels={proto_convert.TITLE_LABEL: "t", proto_convert.RESOURCE_TPL_LABEL: "medium"})
    c = proto_convert.compute_from_vm(vm)
    assert (c.id, c.image, c.cores, c.memory_mib, c.state, c.title, c.resource_tpl) == ("vm-1", "tiny", 2, 1536, occi_state, "t", "medium")
    assert message in c.state_message


def test_storage_network_and_link_states_are_mapped() -> None:
    Attachment = volume_pb2.Volume.Attachment
    volume = volume_pb2.Volume(name="volumes/vol-1", size_gib=0.5, state=volume_pb2.Volume.State.OFFLINE, attachments=[
        Attachment(virtual_machine="virtualMachines/vm-1", device="vdc", state=Attachment.State.ATTACHED),
        Attachment(virtual_machine="virtualMachines/vm-2", device="vdb", state=Attachment.State.ATTACHING),
        Attachment(virtual_machine="virtualMachines/vm-3", device="vdb", state=Attachment.State.DETACHING),
    ])
    assert proto_convert.storage_from_volume(volume).state == "offline"
    links = proto_convert.storage_links_of(volume)
    assert [(x.id, x.device, x.serial, x.state) for x in links] == [
        ("vm-1.vol-1", "/dev/vdc", "vol-1", "active"), ("vm-2.vol-1", "/dev/vdb", "vol-1", "inactive")]  # detaching: gone
    network = network_pb2.Network(name="networks/net-1", vlan=7, cidr="10.128.0.0/24", gateway="10.128.0.1",
                                  state=network_pb2.Network.State.INACTIVE, allocation=network_pb2.Network.Allocation.STATIC)
    n = proto_convert.network_from_proto(network)
    assert (n.state, n.vlan, n.address, n.allocation) == ("inactive", 7, "10.128.0.0/24", "static")
    nic = network_pb2.NetworkInterface(name="networkInterfaces/nic-1", virtual_machine="virtualMachines/vm-1", network="networks/net-1",
                                       mac_address="52:54:00:aa:bb:cc", ip_address="10.128.0.5", state=network_pb2.NetworkInterface.State.INACTIVE)
    i = proto_convert.interface_from_proto(nic, 1, n)
    assert (i.compute_id, i.interface, i.mac, i.address, i.gateway, i.state) == ("vm-1", "eth1", "52:54:00:aa:bb:cc", "10.128.0.5", "10.128.0.1", "inactive")
