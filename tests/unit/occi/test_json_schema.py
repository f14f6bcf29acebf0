"""Every application/occi+json rendering validates against the OCCI 1.2 schema (GFD.226
appendix, tests/data), and every attribute an entity renders is declared by its kind or mixins."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from yarl import URL

from services.gateway.occi import infrastructure as infra
from services.gateway.occi.model import Model
from services.gateway.occi.templates import DEFAULT_SIZES
from tests import occi_schema
from tests.occi_helpers import ALICE, INFRA, SSH_KEY, category, plain, until_active

JSON = {**ALICE, "Accept": "application/occi+json"}


async def _seed(occi: TestClient) -> dict[str, str]:
    async def make(collection: str, body: str) -> str:
        r = await occi.post(collection, headers={**ALICE, "Content-Type": "text/plain"}, data=body)
        assert r.status == 201, await r.text()
        return URL(r.headers["Location"]).path

    storage = await make("/storage/", plain(category("storage"), "X-OCCI-Attribute: occi.storage.size=2", 'X-OCCI-Attribute: occi.core.title="disk"'))
    network = await make("/network/", plain(category("network"), 'Category: ipnetwork; scheme="http://schemas.ogf.org/occi/infrastructure/network#"; class="mixin"',
                                            "X-OCCI-Attribute: occi.network.vlan=12", 'X-OCCI-Attribute: occi.network.address="10.1.0.0/24"'))
    # with a key, so that the running compute offers SSH access (ssh_access)
    compute = await make("/compute/", plain(category("compute"), 'X-OCCI-Attribute: occi.core.summary="s"',
                                            'Category: ssh_key; scheme="http://schemas.ogf.org/occi/infrastructure/credentials#"; class="mixin"',
                                            f'X-OCCI-Attribute: occi.credentials.ssh.publickey="{SSH_KEY}"',
                                            f'Link: <{storage}>; rel="{INFRA}storage"; category="{INFRA}storagelink"',
                                            f'Link: <{network}>; rel="{INFRA}network"; category="{INFRA}networkinterface"'))
    await until_active(occi, compute)
    storagelink = URL((await (await occi.get("/storagelink/", headers={**ALICE, "Accept": "text/uri-list"})).text()).split()[0]).path
    nic = URL((await (await occi.get("/networkinterface/", headers={**ALICE, "Accept": "text/uri-list"})).text()).split()[0]).path
    return {"compute": compute, "storage": storage, "network": network, "storagelink": storagelink, "networkinterface": nic}


async def _json(occi: TestClient, path: str) -> Any:
    r = await occi.get(path, headers=JSON)
    assert r.status == 200 and r.headers["Content-Type"] == "application/occi+json"
    return await r.json(content_type=None)


async def test_model_validates(occi: TestClient) -> None:
    doc = await _json(occi, "/-/")
    assert occi_schema.errors(doc, "model") == []
    assert {k["term"] for k in doc["kinds"]} >= {"entity", "resource", "link", "compute", "storage", "network", "storagelink", "networkinterface"}
    assert all("location" in k for k in doc["kinds"] if k["term"] != "entity")
    for kind in doc["kinds"]:
        assert occi_schema.errors(kind, "kind") == []
    for mixin in doc["mixins"]:
        assert occi_schema.errors(mixin, "mixin") == []
    for action in doc["actions"]:
        assert occi_schema.errors(action, "action") == []


async def test_entities_links_and_collections_validate(occi: TestClient) -> None:
    paths = await _seed(occi)
    for kind in ("compute", "storage", "network"):
        doc = await _json(occi, paths[kind])
        assert occi_schema.errors(doc, "resource") == [], kind
    compute = await _json(occi, paths["compute"])
    assert len(compute["links"]) == 2
    for link in compute["links"]:
        assert occi_schema.errors(link, "link") == []
    for kind in ("storagelink", "networkinterface"):
        assert occi_schema.errors(await _json(occi, paths[kind]), "link") == [], kind
    for collection in ("/compute/", "/storage/", "/network/", "/resource/", "/mixin/os_tpl/"):
        assert occi_schema.errors(await _json(occi, collection), "resource_collection") == [], collection
    for collection in ("/storagelink/", "/networkinterface/", "/link/"):
        assert occi_schema.errors(await _json(occi, collection), "link_collection") == [], collection
    r = await occi.post(f"{paths['compute']}?action=save", headers={**JSON, "Content-Type": "application/occi+json"},
                        data='{"action": "http://schemas.ogf.org/occi/infrastructure/compute/action#save"}')
    assert occi_schema.errors(await r.json(content_type=None), "mixin") == []


async def test_every_rendered_attribute_is_declared_and_inline_links_are_complete(occi: TestClient) -> None:
    paths = await _seed(occi)
    model = Model.build([("tiny", ""), ("debian12", ""), ("atlas-sw", "")], DEFAULT_SIZES)
    for path in paths.values():
        doc = await _json(occi, path)
        entities = [doc, *doc.get("links", [])]
        for e in entities:
            kind = model.kind(e["kind"])
            assert kind is not None
            mixins = [m for m in (model.mixin(i) for i in e["mixins"]) if m is not None]
            assert len(mixins) == len(e["mixins"]), e["mixins"]
            declared = model.declared(kind, mixins)
            rendered = set(e["attributes"]) | {"occi.core.id"} | ({"occi.core.title"} if "title" in e else set())
            undeclared = rendered - set(declared)
            assert not undeclared, f"{path}: {undeclared}"
            if "source" in e:
                required = {a.name for a in declared.values() if a.required} - {"occi.core.id", "occi.core.source", "occi.core.target"}
                assert required <= set(e["attributes"]), f"{path}: missing {required - set(e['attributes'])}"
    # the text rendering of the compute carries the same inline link attributes
    text = await (await occi.get(paths["compute"], headers=ALICE)).text()
    for required in ("occi.storagelink.deviceid", "occi.storagelink.state", "occi.networkinterface.mac",
                     "occi.networkinterface.interface", "occi.networkinterface.address", "occi.networkinterface.allocation"):
        assert required in text
    assert infra.SSH_ACCESS.id.split("#")[1] in text
