"""The gateway's OCCI endpoint over the real control plane (3 nameservers on a 3-member etcd,
simulated hosts): pOCCI, authentication and ownership, the VO's images, JSON schema, fuzzing,
and the CloudBackend contract for the gRPC backend."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings

from clients.wnodes_client import Client
from deploy.stack.stack import Stack, StackState
from services.gateway.backends import Backends
from services.gateway.occi.grpc_backend import GrpcCloudBackend
from tests import occi_schema, pocci
from tests.contract.occi_backend_contract import CloudBackendContract
from tests.occi_fuzz import FuzzRequest, requests
from tests.occi_helpers import basic, category, plain
from wnodes.v1 import virtual_machine_service_pb2

pytestmark = pytest.mark.integration
NEEDS_CLOUD_API = {"OCCI/CORE/MISC/001", "OCCI/INFRA/CREATE/002", "OCCI/INFRA/CREATE/003", "OCCI/INFRA/CREATE/006",
                   "OCCI/INFRA/CREATE/007"}
"""pOCCI tests that need compute actions, volumes and networks (branch `cloud`'s API)."""


def cloud_api_present() -> bool:
    import importlib.util

    return hasattr(virtual_machine_service_pb2, "StopVirtualMachineRequest") and importlib.util.find_spec("wnodes.v1.volume_service_pb2") is not None


def _state(stack: Stack) -> StackState:
    state = stack.state
    assert state is not None and state.occi and len(state.occi_users) == 2
    return state


def _user(stack: Stack, index: int) -> tuple[str, str, str]:
    u = _state(stack).occi_users[index]
    return u["name"], u["password"], u["vo"]


@pytest.fixture
async def http(fake_stack: Stack) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=_state(fake_stack).occi) as session:
        yield session


def auth(stack: Stack, index: int = 0) -> dict[str, str]:
    name, password, _ = _user(stack, index)
    return basic(name, password)


async def _create(http: aiohttp.ClientSession, stack: Stack, body: str, index: int = 0) -> str:
    async with http.post("/compute/", headers={**auth(stack, index), "Content-Type": "text/plain"}, data=body) as r:
        assert r.status == 201, await r.text()
        return str(aiohttp.client.URL(r.headers["Location"]).path)


def test_stack_env_names_the_occi_endpoint_and_two_users_in_two_vos(fake_stack: Stack) -> None:
    env = fake_stack.env()
    assert env["WNODES_OCCI_ENDPOINT"].startswith("http://127.0.0.1:")
    assert env["WNODES_OCCI_USER"] and env["WNODES_OCCI_PASSWORD"] and env["WNODES_OCCI_USER2"] and env["WNODES_OCCI_PASSWORD2"]
    assert env["WNODES_OCCI_VO"] != env["WNODES_OCCI_VO2"]


@pytest.mark.parametrize("mime", ["text/plain", "text/occi"])
async def test_pocci_against_the_gateway(fake_stack: Stack, mime: str) -> None:
    name, password, _ = _user(fake_stack, 0)
    results = await asyncio.to_thread(pocci.run, _state(fake_stack).occi, name, password, mime)
    failed = {k: v for k, v in results.items() if v != "OK"}
    if cloud_api_present():
        assert failed == {}
        return
    # Until branch `cloud` is merged, what needs its API answers 501 and everything else passes.
    assert set(failed) <= NEEDS_CLOUD_API, failed
    assert set(results) - NEEDS_CLOUD_API <= {k for k, v in results.items() if v == "OK"}
    pytest.xfail(f"needs branch cloud's API (actions, volumes, networks): {sorted(failed)}")


async def test_wrong_password_is_401_and_another_users_compute_is_404(fake_stack: Stack, http: aiohttp.ClientSession) -> None:
    name, _, _ = _user(fake_stack, 0)
    async with http.get("/-/", headers=basic(name, "wrong")) as r:
        assert r.status == 401 and "OCCI/1.2" in r.headers["Server"]
    path = await _create(http, fake_stack, plain(category("compute"), 'X-OCCI-Attribute: occi.core.title="mine"'))
    async with http.get(path, headers=auth(fake_stack, 1)) as r:
        assert r.status == 404
    async with http.delete(path, headers=auth(fake_stack, 1)) as r:
        assert r.status == 404
    async with http.get("/compute/", headers=auth(fake_stack, 1)) as r:
        assert path not in await r.text()
    async with http.get(path, headers=auth(fake_stack, 0)) as r:
        text = await r.text()
        assert r.status == 200 and 'occi.core.title="mine"' in text and "occi.compute.cores=1" in text
    async with http.delete(path, headers=auth(fake_stack, 0)) as r:
        assert r.status in (200, 204)
    async with http.get(path, headers=auth(fake_stack, 0)) as r:
        assert r.status == 404


async def test_os_tpl_shows_the_vos_images_only(fake_stack: Stack, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    _, _, vo = _user(fake_stack, 0)
    name, _, other_vo = _user(fake_stack, 1)
    blob = tmp_path / "disk.qcow2"
    blob.write_bytes(b"a VO-private placeholder image\n")
    with Client(_state(fake_stack).gateway, user=name, vo=vo) as client:
        await asyncio.to_thread(client.upload_image, "vo-only", blob, visibility="VO")
    deadline = asyncio.get_running_loop().time() + 15  # the gateway caches a caller's image list for seconds
    while True:
        async with http.get("/-/", headers=auth(fake_stack, 0)) as r:
            if "Category: vo-only;" in await r.text():
                break
        assert asyncio.get_running_loop().time() < deadline, "the VO's new image never showed as an os_tpl"
        await asyncio.sleep(0.5)
    async with http.get("/-/", headers=auth(fake_stack, 1)) as r:
        text = await r.text()
        assert "Category: vo-only;" not in text and "Category: tiny;" in text, other_vo
    body = plain(category("compute"), 'Category: vo-only; scheme="http://schemas.wnodes.infn.it/occi/infrastructure/os_tpl#"; class="mixin"')
    async with http.post("/compute/", headers={**auth(fake_stack, 1), "Content-Type": "text/plain"}, data=body) as r:
        assert r.status == 400 and "unknown category" in await r.text()


async def test_json_renderings_of_a_real_compute_validate(fake_stack: Stack, http: aiohttp.ClientSession) -> None:
    path = await _create(http, fake_stack, plain(category("compute"),
                                                 'Category: small; scheme="http://schemas.wnodes.infn.it/occi/infrastructure/resource_tpl#"; class="mixin"'))
    headers = {**auth(fake_stack), "Accept": "application/occi+json"}
    docs: dict[str, Any] = {}
    for key, url in (("model", "/-/"), ("resource", path), ("resource_collection", "/compute/")):
        async with http.get(url, headers=headers) as r:
            docs[key] = json.loads(await r.text())
            assert occi_schema.errors(docs[key], key) == [], key
    compute = docs["resource"]
    assert compute["attributes"]["occi.compute.cores"] == 1 and compute["attributes"]["occi.compute.memory"] == 0.5
    assert compute["attributes"]["occi.compute.state"] in ("active", "inactive")
    async with http.delete(path, headers=auth(fake_stack)) as r:
        assert r.status == 200


def test_fuzzed_requests_never_get_a_5xx(fake_stack: Stack) -> None:
    """Mutated renderings against the real gateway. Paths are limited to what exists before
    branch `cloud` (a storage create would rightly answer 501 until then)."""
    state = _state(fake_stack)
    headers = auth(fake_stack)
    loop = asyncio.new_event_loop()
    session = loop.run_until_complete(_session(state.occi))
    created: list[str] = []

    async def send(req: FuzzRequest) -> tuple[int, str, str]:
        async with session.request(req.method, req.path, headers=req.headers, data=req.body) as r:
            return r.status, await r.text(errors="replace"), r.headers.get("Location", "")

    paths = ["/-/", "/compute/", "/compute/vm-000001", "/mixin/os_tpl/tiny/", "/compute/?page=1&number=2", "/nosuch/"]

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(requests(paths=paths, auth=headers))
    def check(req: FuzzRequest) -> None:
        body = req.body.decode(errors="replace")
        if req.method == "POST" and ("storage" in body or "network" in body):
            return
        status, text, location = loop.run_until_complete(send(req))
        if status == 201 and location:
            created.append(location)
        assert status < 500, f"{req}: {status} {text}"

    try:
        check()
    finally:
        for location in created:
            loop.run_until_complete(send(FuzzRequest("DELETE", aiohttp.client.URL(location).path, headers, b"")))
        loop.run_until_complete(session.close())
        loop.close()


async def _session(base: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(base_url=base, skip_auto_headers=["Content-Type"])


class TestGrpcCloudBackend(CloudBackendContract):
    @pytest.fixture
    async def backend(self, fake_stack: Stack) -> AsyncIterator[GrpcCloudBackend]:
        state = _state(fake_stack)
        nameservers = [p.endpoint for p in state.procs if p.kind == "nameserver"]
        imagestore = next(p.endpoint for p in state.procs if p.kind == "imagestore")
        backends = Backends(nameservers, imagestore)
        yield GrpcCloudBackend(backends)
        await backends.close()
