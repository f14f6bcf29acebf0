"""Bad renderings get a 4xx with a plain-text reason, and nothing is half-created."""

from __future__ import annotations

import base64

import pytest
from aiohttp.test_utils import TestClient

from tests.occi_helpers import ALICE, INFRA, category, plain

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBdmsT0NAKpT8ZxvOhjrcSJtAp0v7k0wM8BM0XEYxV3q a@b"
CASES = [
    (plain("Category: compute"), "scheme is missing"),
    (plain(category("compute"), "X-OCCI-Attribute: occi.compute.cores=two"), "neither a quoted string"),
    (plain(category("compute"), 'X-OCCI-Attribute: occi.compute.cores="2"'), "must be a number"),
    (plain(category("compute"), "X-OCCI-Attribute: occi.compute.cores=2.5"), "must be an integer"),
    (plain(category("compute"), "X-OCCI-Attribute: occi.compute.cores=0"), "between"),
    (plain(category("compute"), "X-OCCI-Attribute: occi.compute.memory=99999"), "between"),
    (plain(category("compute"), 'X-OCCI-Attribute: occi.compute.architecture="arm"'), "must be one of x86, x64"),
    (plain(category("compute"), "X-OCCI-Attribute: occi.nosuch=1"), "not declared by compute"),
    (plain(category("compute"), "X-OCCI-Attribute: occi.storage.size=1"), "not declared by compute"),
    (plain(category("nosuch")), "unknown category"),
    (plain(category("compute", cls="mixin")), "is a kind, not a mixin"),
    (plain(category("storage")), "cannot be made or changed in the compute collection"),
    (plain(category("compute"), 'Category: ssh_key; scheme="http://schemas.ogf.org/occi/infrastructure/credentials#"; class="mixin"'),
     "needs the attribute(s) occi.credentials.ssh.publickey"),
    (plain(category("compute"), 'Category: ssh_key; scheme="http://schemas.ogf.org/occi/infrastructure/credentials#"; class="mixin"',
           'X-OCCI-Attribute: occi.credentials.ssh.publickey="not a key"'), "not an OpenSSH public key"),
    (plain(category("compute"), 'Category: user_data; scheme="http://schemas.ogf.org/occi/infrastructure/compute#"; class="mixin"',
           'X-OCCI-Attribute: occi.compute.userdata="%%%"'), "must be base64"),
    # the nameserver's limit (one rule, in nameserver/validation.py), as the OCCI answer
    (plain(category("compute"), 'Category: user_data; scheme="http://schemas.ogf.org/occi/infrastructure/compute#"; class="mixin"',
           'X-OCCI-Attribute: occi.compute.userdata="' + base64.b64encode(b"x" * (64 * 1024 + 1)).decode() + '"'), "at most 65536"),
    (plain(category("compute"), 'Category: ipnetwork; scheme="http://schemas.ogf.org/occi/infrastructure/network#"; class="mixin"'),
     "does not apply to compute"),
    (plain(category("compute"), 'Category: small; scheme="http://schemas.wnodes.infn.it/occi/infrastructure/resource_tpl#"; class="mixin"',
           'Category: large; scheme="http://schemas.wnodes.infn.it/occi/infrastructure/resource_tpl#"; class="mixin"'), "at most one resource_tpl"),
    (plain(category("compute"), 'X-OCCI-Attribute: occi.core.title="unterminated'), "unterminated"),
    (plain(category("compute"), "this is not OCCI"), "not an OCCI line"),
    (plain(category("compute"), "Link: </storage/nosuch>; rel=\"" + INFRA + "storage\""), "does not exist"),
    (plain(category("compute"), "Link: </compute/x>; rel=\"" + INFRA + "compute\""), "only storage links"),
    (plain(category("compute"), 'X-OCCI-Attribute: occi.core.title="' + "x" * 300 + '"'), "at most 256"),
    (plain(category("compute"), 'X-OCCI-Attribute: occi.core.title="a\x01b"'), "control characters"),
]


@pytest.mark.parametrize(("body", "message"), CASES)
async def test_bad_text_renderings_are_400_with_a_reason(occi: TestClient, body: str, message: str) -> None:
    r = await occi.post("/compute/", headers={**ALICE, "Content-Type": "text/plain"}, data=body)
    text = await r.text()
    assert r.status == 400, text
    assert message in text
    assert r.headers["Content-Type"] == "text/plain"
    assert "Traceback" not in text
    assert "X-OCCI-Location" not in await (await occi.get("/compute/", headers=ALICE)).text()


@pytest.mark.parametrize(("body", "message"), [
    ("{", "not JSON"),
    ("[]", "must be an object"),
    ('{"kind": 3}', "not a type identifier"),
    ('{"kind": "http://schemas.ogf.org/occi/infrastructure#compute", "attributes": {"occi.compute.cores": [1]}}', "arrays, objects"),
    ('{"kind": "http://schemas.ogf.org/occi/infrastructure#compute", "attributes": {"occi.compute.cores": true}}', "must be a number"),
    ('{"kind": "http://schemas.ogf.org/occi/infrastructure#compute", "title": 5}', "must be a string"),
    ('{"kind": "http://schemas.ogf.org/occi/infrastructure#compute", "mixins": "x"}', "must be an array"),
])
async def test_bad_json_is_400(occi: TestClient, body: str, message: str) -> None:
    r = await occi.post("/compute/", headers={**ALICE, "Content-Type": "application/occi+json"}, data=body)
    assert r.status == 400
    assert message in await r.text()


async def test_storage_needs_its_size(occi: TestClient) -> None:
    r = await occi.post("/storage/", headers={**ALICE, "Content-Type": "text/plain"}, data=plain(category("storage")))
    assert r.status == 400 and "occi.storage.size" in await r.text()


async def test_inline_link_failure_leaves_no_compute(occi: TestClient) -> None:
    r = await occi.post("/storage/", headers={**ALICE, "Content-Type": "text/plain"},
                        data=plain(category("storage"), "X-OCCI-Attribute: occi.storage.size=1"))
    first = r.headers["Location"]
    r = await occi.post("/storage/", headers={**ALICE, "Content-Type": "text/plain"},
                        data=plain(category("storage"), "X-OCCI-Attribute: occi.storage.size=1"))
    second = r.headers["Location"]
    # the backend refuses the second attachment (same device) after the compute exists: a conflict
    body = plain(category("compute"), f'Link: <{first}>; rel="{INFRA}storage"; category="{INFRA}storagelink"; occi.storagelink.deviceid="/dev/vdb"',
                 f'Link: <{second}>; rel="{INFRA}storage"; category="{INFRA}storagelink"; occi.storagelink.deviceid="/dev/vdb"')
    r = await occi.post("/compute/", headers={**ALICE, "Content-Type": "text/plain"}, data=body)
    assert r.status == 409 and "device vdb of the VM is taken" in await r.text()
    assert "X-OCCI-Location" not in await (await occi.get("/compute/", headers=ALICE)).text()
    assert "X-OCCI-Location" not in await (await occi.get("/storagelink/", headers=ALICE)).text()


async def test_immutable_and_template_changes_are_refused(occi: TestClient) -> None:
    r = await occi.post("/compute/", headers={**ALICE, "Content-Type": "text/plain"}, data=plain(category("compute")))
    path = r.headers["Location"].split("//", 1)[1].split("/", 1)[1]
    r = await occi.post(f"/{path}", headers={**ALICE, "Content-Type": "text/plain"}, data=plain("X-OCCI-Attribute: occi.compute.cores=4"))
    assert r.status == 409 and "cannot change" in await r.text()
    r = await occi.put(f"/{path}", headers={**ALICE, "Content-Type": "text/plain"},
                       data=plain(category("compute"), 'X-OCCI-Attribute: occi.core.id="other"'))
    assert r.status == 400 and "occi.core.id" in await r.text()
    r = await occi.post(f"/{path}?action=nosuch", headers=ALICE)
    assert r.status == 400 and "no action" in await r.text()


async def test_methods_not_defined_are_405(occi: TestClient) -> None:
    assert (await occi.put("/compute/", headers=ALICE)).status == 405
    assert (await occi.patch("/-/", headers=ALICE)).status == 405
    assert (await occi.get("/nosuch/", headers=ALICE)).status == 404
    assert (await occi.get("/compute/vm-1/x", headers=ALICE)).status == 404
