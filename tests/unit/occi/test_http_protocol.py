"""GFD.223 over the real path in one process (OCCI -> gateway core -> in-process control plane):
status codes, headers, renderings, negotiation, CRUD, actions, pagination and filtering."""

from __future__ import annotations

import json

import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from tests.occi_helpers import ALICE, BOB, INFRA, category, plain, until_active

RESOURCE_TPL = "http://schemas.wnodes.infn.it/occi/infrastructure/resource_tpl#"
OS_TPL = "http://schemas.wnodes.infn.it/occi/infrastructure/os_tpl#"
ACTION = "http://schemas.ogf.org/occi/infrastructure/compute/action#"


async def create(occi: TestClient, body: str, collection: str = "/compute/", who: dict[str, str] = ALICE) -> str:
    r = await occi.post(collection, headers={**who, "Content-Type": "text/plain"}, data=body)
    assert r.status == 201, await r.text()
    return URL(r.headers["Location"]).path


async def test_query_interface_lists_core_infrastructure_and_templates(occi: TestClient) -> None:
    for path in ("/-/", "/.well-known/org/ogf/occi/-/"):
        r = await occi.get(path, headers=ALICE)
        text = await r.text()
        assert r.status == 200
        assert r.headers["Content-Type"] == "text/plain"
        assert "OCCI/1.2" in r.headers["Server"]
        for term in ("entity", "resource", "link", "compute", "storage", "network", "storagelink", "networkinterface",
                     "ipnetwork", "ipnetworkinterface", "os_tpl", "resource_tpl", "ssh_key", "user_data", "public_key",
                     "small", "medium", "large", "start", "stop", "restart", "suspend", "save", "online", "offline", "up", "down"):
            assert f"Category: {term};" in text, term
        assert 'location="/compute/"' in text
        assert 'scheme="http://schemas.ogf.org/occi/infrastructure/credentials#"' in text
        assert "occi.credentials.ssh.publickey" in text and "occi.compute.userdata" in text
        assert 'scheme="http://schemas.openstack.org/instance/credentials#"' in text
        assert 'scheme="http://schemas.openstack.org/compute/instance#"' in text


async def test_query_filter_by_category_header(occi: TestClient) -> None:
    headers = {**ALICE, "Content-Type": "text/occi", "Category": f'compute; scheme="{INFRA}"; class="kind"'}
    r = await occi.get("/-/", headers=headers)
    text = await r.text()
    assert r.status == 200
    assert text.count("Category:") == 1 and "Category: compute;" in text


async def test_os_tpl_per_image_of_the_callers_vo_only(occi: TestClient) -> None:
    alice = await (await occi.get("/-/", headers=ALICE)).text()
    bob = await (await occi.get("/-/", headers=BOB)).text()
    assert f'Category: atlas-sw; scheme="{OS_TPL}"' in alice
    assert "atlas-sw" not in bob
    assert f'Category: tiny; scheme="{OS_TPL}"' in bob
    assert 'rel="http://schemas.ogf.org/occi/infrastructure#os_tpl"' in alice


async def test_create_read_update_delete_compute(occi: TestClient) -> None:
    # Prepare
    body = plain(category("compute"), f'Category: medium; scheme="{RESOURCE_TPL}"; class="mixin"',
                 f'Category: debian12; scheme="{OS_TPL}"; class="mixin"', 'X-OCCI-Attribute: occi.core.title="first"')
    # Execute
    r = await occi.post("/compute/", headers={**ALICE, "Content-Type": "text/plain"}, data=body)
    # Assert
    assert r.status == 201
    location = r.headers["Location"]
    assert location.startswith("http://") and f"X-OCCI-Location: {location}" in await r.text()
    path = URL(location).path
    text = await (await occi.get(path, headers=ALICE)).text()
    assert "occi.compute.cores=2" in text and "occi.compute.memory=2.0" in text and 'occi.core.title="first"' in text
    assert f'Category: debian12; scheme="{OS_TPL}"' in text
    assert f"Link: <{path}?action=stop>" in await until_active(occi, path)

    r = await occi.post(path, headers={**ALICE, "Content-Type": "text/plain"}, data=plain('X-OCCI-Attribute: occi.core.title="renamed"'))
    assert r.status == 200 and 'occi.core.title="renamed"' in await r.text()
    r = await occi.put(path, headers={**ALICE, "Content-Type": "text/plain"}, data=plain(category("compute"), 'X-OCCI-Attribute: occi.core.summary="s"'))
    text = await r.text()
    assert r.status == 200 and 'occi.core.summary="s"' in text and "occi.core.title" not in text

    r = await occi.delete(path, headers=ALICE)
    assert r.status in (200, 204)
    assert (await occi.get(path, headers=ALICE)).status == 404
    assert (await occi.delete(path, headers=ALICE)).status == 404


async def test_user_data_and_ssh_key_and_legacy_mixins_are_accepted(occi: TestClient) -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBdmsT0NAKpT8ZxvOhjrcSJtAp0v7k0wM8BM0XEYxV3q alice@host"
    body = plain(category("compute"),
                 'Category: ssh_key; scheme="http://schemas.ogf.org/occi/infrastructure/credentials#"; class="mixin"',
                 'Category: user_data; scheme="http://schemas.ogf.org/occi/infrastructure/compute#"; class="mixin"',
                 f'X-OCCI-Attribute: occi.credentials.ssh.publickey="{key}"', 'X-OCCI-Attribute: occi.compute.userdata="aGVsbG8="')
    await create(occi, body)
    legacy = plain(category("compute"),
                   'Category: public_key; scheme="http://schemas.openstack.org/instance/credentials#"; class="mixin"',
                   'Category: user_data; scheme="http://schemas.openstack.org/compute/instance#"; class="mixin"',
                   'X-OCCI-Attribute: org.openstack.credentials.publickey.name="k"',
                   f'X-OCCI-Attribute: org.openstack.credentials.publickey.data="{key}"',
                   'X-OCCI-Attribute: org.openstack.compute.user_data="aGVsbG8="')
    await create(occi, legacy)


async def test_text_occi_accepts_comma_lists_and_repeated_headers(occi: TestClient) -> None:
    headers = [*ALICE.items(), ("Content-Type", "text/occi"),
               ("Category", f'compute; scheme="{INFRA}"; class="kind", small; scheme="{RESOURCE_TPL}"; class="mixin"'),
               ("X-OCCI-Attribute", 'occi.core.title="a, b"'), ("X-OCCI-Attribute", 'occi.core.summary="two"')]
    r = await occi.post("/compute/", headers=headers)
    assert r.status == 201, await r.text()
    r = await occi.get(URL(r.headers["Location"]).path, headers={**ALICE, "Accept": "text/occi"})
    assert r.headers["Content-Type"] == "text/occi"
    assert 'occi.core.title="a, b"' in r.headers["X-OCCI-Attribute"]
    assert await r.text() == "OK\n"


async def test_actions_change_state_and_save_answers_with_the_new_os_tpl(occi: TestClient) -> None:
    path = await create(occi, plain(category("compute")))
    for term, state in (("stop", "inactive"), ("start", "active"), ("suspend", "suspended"), ("start", "active"), ("restart", "active")):
        r = await occi.post(f"{path}?action={term}", headers={**ALICE, "Content-Type": "text/plain"},
                            data=plain(f'Category: {term}; scheme="{ACTION}"; class="action"'))
        assert r.status == 200, await r.text()
        assert f'occi.compute.state="{state}"' in await r.text()
    r = await occi.post(f"{path}?action=save", headers={**ALICE, "Content-Type": "text/plain"},
                        data=plain(f'Category: save; scheme="{ACTION}"; class="action"', 'X-OCCI-Attribute: name="mysave"'))
    text = await r.text()
    assert r.status == 200 and f'Category: mysave; scheme="{OS_TPL}"; class="mixin"' in text
    assert 'rel="http://schemas.ogf.org/occi/infrastructure#os_tpl"' in text
    assert "Category: mysave;" in await (await occi.get("/-/", headers=ALICE)).text()
    r = await occi.post(f"{path}?action=online", headers=ALICE)
    assert r.status == 400 and "has no action 'online'" in await r.text()


async def test_storage_network_and_links(occi: TestClient) -> None:
    storage = await create(occi, plain(category("storage"), "X-OCCI-Attribute: occi.storage.size=1.5"), "/storage/")
    network = await create(occi, plain(category("network"), 'Category: ipnetwork; scheme="http://schemas.ogf.org/occi/infrastructure/network#"; class="mixin"',
                                       'X-OCCI-Attribute: occi.network.address="10.9.0.0/24"'), "/network/")
    compute = await create(occi, plain(category("compute"),
                                       f'Link: <{storage}>; rel="{INFRA}storage"; category="{INFRA}storagelink"',
                                       f'Link: <{network}>; rel="{INFRA}network"; category="{INFRA}networkinterface"'))
    text = await (await occi.get(compute, headers=ALICE)).text()
    assert f"Link: <{storage}>" in text and "occi.storagelink.deviceid=" in text
    assert f"Link: <{network}>" in text and "occi.networkinterface.mac=" in text
    storage_id = storage.rsplit("/", 1)[-1]
    assert 'occi.storagelink.deviceid="/dev/vdb"' in text and f'it.infn.wnodes.storagelink.serial="{storage_id}"' in text
    assert f"the guest sees a virtio disk with serial {storage_id}" in text
    links = await (await occi.get("/link/", headers=ALICE)).text()
    assert links.count("X-OCCI-Location:") == 2
    r = await occi.post(f"{network}?action=down", headers=ALICE)
    assert 'occi.network.state="inactive"' in await r.text()
    assert 'occi.networkinterface.state="inactive"' in await (await occi.get(compute, headers=ALICE)).text()  # it follows its network
    r = await occi.post(f"{storage}?action=offline", headers=ALICE)
    assert r.status == 409 and "detach it" in await r.text()  # attached storage stays online
    assert (await occi.delete(storage, headers=ALICE)).status == 409  # still attached
    link = URL((await (await occi.get("/storagelink/", headers=ALICE)).text()).split("X-OCCI-Location: ")[1].strip()).path
    assert (await occi.delete(link, headers=ALICE)).status == 200
    for term, state in (("offline", "offline"), ("online", "online")):
        r = await occi.post(f"{storage}?action={term}", headers=ALICE)
        assert f'occi.storage.state="{state}"' in await r.text()
    assert (await occi.delete(storage, headers=ALICE)).status == 200


async def test_a_network_without_an_address_gets_one_and_unkept_attributes_are_refused(occi: TestClient) -> None:
    network = await create(occi, plain(category("network"), 'X-OCCI-Attribute: occi.core.title="lab"'), "/network/")
    text = await (await occi.get(network, headers=ALICE)).text()
    assert 'occi.network.address="10.128.0.0/24"' in text and 'occi.network.gateway="10.128.0.1"' in text
    assert "Category: ipnetwork;" in text and "occi.network.vlan=" in text
    for kind, attributes in (("storage", ("occi.storage.size=1", 'occi.core.summary="s"')), ("network", ('occi.network.label="l"',))):
        body = plain(category(kind), *(f"X-OCCI-Attribute: {a}" for a in attributes))
        r = await occi.post(f"/{kind}/", headers={**ALICE, "Content-Type": "text/plain"}, data=body)
        assert r.status == 400 and "keeps no such value" in await r.text(), kind


async def test_a_static_network_takes_the_address_a_client_gives_its_interface(occi: TestClient) -> None:
    network = await create(occi, plain(category("network"), 'Category: ipnetwork; scheme="http://schemas.ogf.org/occi/infrastructure/network#"; class="mixin"',
                                       'X-OCCI-Attribute: occi.network.address="192.168.7.0/24"', 'X-OCCI-Attribute: occi.network.allocation="static"'),
                           "/network/")
    compute = await create(occi, plain(category("compute")))
    link = [f'X-OCCI-Attribute: occi.core.source="{compute}"', f'X-OCCI-Attribute: occi.core.target="{network}"']
    r = await occi.post("/networkinterface/", headers={**ALICE, "Content-Type": "text/plain"}, data=plain(category("networkinterface"), *link))
    assert r.status == 400 and "statically" in (await r.text()).lower()
    nic = await create(occi, plain(category("networkinterface"), 'Category: ipnetworkinterface; scheme="http://schemas.ogf.org/occi/infrastructure/networkinterface#"; class="mixin"',
                                   *link, 'X-OCCI-Attribute: occi.networkinterface.address="192.168.7.20"'), "/networkinterface/")
    text = await (await occi.get(nic, headers=ALICE)).text()
    assert 'occi.networkinterface.address="192.168.7.20"' in text and 'occi.networkinterface.allocation="static"' in text


async def test_standalone_link_create(occi: TestClient) -> None:
    compute = await create(occi, plain(category("compute")))
    storage = await create(occi, plain(category("storage"), "X-OCCI-Attribute: occi.storage.size=1"), "/storage/")
    body = plain(category("storagelink"), f'X-OCCI-Attribute: occi.core.source="{compute}"',
                 f'X-OCCI-Attribute: occi.core.target="http://elsewhere:1{storage}"', 'X-OCCI-Attribute: occi.storagelink.deviceid="/dev/vdc"')
    link = await create(occi, body, "/storagelink/")
    text = await (await occi.get(link, headers=ALICE)).text()
    assert f'occi.core.source="{compute}"' in text and 'occi.storagelink.deviceid="/dev/vdc"' in text


@pytest.mark.parametrize(("accept", "status", "content_type"), [
    ("text/plain", 200, "text/plain"), ("text/occi", 200, "text/occi"), ("application/occi+json", 200, "application/occi+json"),
    ("text/uri-list", 200, "text/uri-list"), ("*/*", 200, "text/plain"), ("image/png", 406, "text/plain"),
    ("text/html, application/xml;q=0.9", 406, "text/plain"), ("application/json;q=0.5, text/occi", 200, "text/occi"),
])
async def test_collection_negotiation(occi: TestClient, accept: str, status: int, content_type: str) -> None:
    await create(occi, plain(category("compute")))
    r = await occi.get("/compute/", headers={**ALICE, "Accept": accept})
    assert r.status == status
    assert r.headers["Content-Type"] == content_type


async def test_uri_list_is_for_collections_only(occi: TestClient) -> None:
    path = await create(occi, plain(category("compute")))
    r = await occi.get(path, headers={**ALICE, "Accept": "text/uri-list"})
    assert r.status == 400 and "collections only" in await r.text()
    r = await occi.get("/compute/", headers={**ALICE, "Accept": "text/uri-list"})
    assert (await r.text()).strip().startswith("http://")


async def test_pagination(occi: TestClient) -> None:
    for _ in range(5):
        await create(occi, plain(category("compute")))
    pages = [await (await occi.get(f"/compute/?page={n}&number=2", headers=ALICE)).text() for n in (1, 2, 3, 4)]
    assert [p.count("X-OCCI-Location") for p in pages] == [2, 2, 1, 0]
    assert (await occi.get("/compute/?number=100000", headers=ALICE)).status == 413
    assert (await occi.get("/compute/?page=x", headers=ALICE)).status == 400


async def test_collection_filter_by_attribute(occi: TestClient) -> None:
    await create(occi, plain(category("compute"), 'X-OCCI-Attribute: occi.core.title="one"'))
    await create(occi, plain(category("compute"), 'X-OCCI-Attribute: occi.core.title="two"'))
    r = await occi.get("/compute/", headers={**ALICE, "Content-Type": "text/occi", "X-OCCI-Attribute": 'occi.core.title="two"'})
    assert (await r.text()).count("X-OCCI-Location") == 1


async def test_mixin_collections(occi: TestClient) -> None:
    await create(occi, plain(category("compute"), f'Category: large; scheme="{RESOURCE_TPL}"; class="mixin"'))
    await create(occi, plain(category("compute")))
    large = await (await occi.get("/mixin/resource_tpl/large/", headers=ALICE)).text()
    assert large.count("X-OCCI-Location") == 1
    assert (await (await occi.get("/mixin/os_tpl/", headers=ALICE)).text()).count("X-OCCI-Location") == 2


async def test_user_mixin_define_tag_and_remove(occi: TestClient) -> None:
    path = await create(occi, plain(category("compute")))
    mixin = 'Category: mytag; scheme="http://example.com/occi/my#"; class="mixin"; location="/mixin/my/tag/"'
    r = await occi.post("/-/", headers={**ALICE, "Content-Type": "text/plain"}, data=plain(mixin))
    assert r.status == 200
    assert "mytag" not in await (await occi.get("/-/", headers=BOB)).text()
    r = await occi.post("/mixin/my/tag/", headers={**ALICE, "Content-Type": "text/uri-list"}, data=path + "\n")
    assert r.status == 200 and path in await r.text()
    assert 'Category: mytag; scheme="http://example.com/occi/my#"' in await (await occi.get(path, headers=ALICE)).text()
    r = await occi.delete("/-/", headers={**ALICE, "Content-Type": "text/plain"}, data=plain(mixin))
    assert r.status == 200 and "mytag" not in await (await occi.get(path, headers=ALICE)).text()


async def test_server_header_version_and_auth(occi: TestClient) -> None:
    r = await occi.get("/-/", headers={**ALICE, "User-Agent": "client/1 OCCI/1.3"})
    assert r.status == 501 and "OCCI/1.2" in await r.text()
    assert (await occi.get("/-/", headers={**ALICE, "User-Agent": "client/1 OCCI/1.1"})).status == 200
    r = await occi.get("/-/")
    assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
    assert "OCCI/1.2" in r.headers["Server"]
    from tests.occi_helpers import basic

    assert (await occi.get("/-/", headers=basic("alice", "wrong"))).status == 401
    assert (await occi.get("/-/", headers=basic("mallory", "x"))).status == 401
    assert (await occi.get("/-/", headers={"Authorization": "Basic !!!"})).status == 401


async def test_another_users_entities_are_404(occi: TestClient) -> None:
    path = await create(occi, plain(category("compute")))
    for method in ("get", "delete", "put", "post"):
        r = await getattr(occi, method)(path, headers={**BOB, "Content-Type": "text/plain"}, data=plain(category("compute")))
        assert r.status == 404, method
    r = await occi.post(f"{path}?action=stop", headers=BOB)
    assert r.status == 404
    assert "X-OCCI-Location" not in await (await occi.get("/compute/", headers=BOB)).text()
    assert (await occi.get(path, headers=ALICE)).status == 200


async def test_json_create_and_read(occi: TestClient) -> None:
    doc = {"kind": f"{INFRA}compute", "mixins": [f"{RESOURCE_TPL}small"], "attributes": {"occi.core.title": "j"}}
    r = await occi.post("/compute/", headers={**ALICE, "Content-Type": "application/occi+json", "Accept": "application/occi+json"},
                        data=json.dumps(doc))
    assert r.status == 201
    body = await r.json(content_type=None)
    assert body["title"] == "j" and body["kind"] == f"{INFRA}compute"
    r = await occi.post(f"{URL(r.headers['Location']).path}?action=stop", headers={**ALICE, "Content-Type": "application/occi+json"},
                        data=json.dumps({"action": f"{ACTION}stop", "attributes": {"method": "poweroff"}}))
    assert r.status == 200


async def test_oversized_body_is_413(occi: TestClient) -> None:
    r = await occi.post("/compute/", headers={**ALICE, "Content-Type": "text/plain"}, data="X" * (600 * 1024))
    assert r.status == 413
