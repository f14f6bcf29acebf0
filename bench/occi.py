"""OCCI benchmark: POST /compute/ to SSH-ready next to the same image booted through the gRPC API
(same run, interleaved), and requests per second for GET of a 1,000-entity collection in each
rendering next to the gRPC list of the same VMs.

SSH-ready means `ssh ... true` succeeds with the key given at creation; both paths poll the same
way (the VM's state, then ssh every 0.2 s), so the difference is the interface's own cost.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from yarl import URL

from bench.stats import percentile
from clients.wnodes_client import Client
from deploy.stack.stack import Stack
from services.common.identity import Principal
from wnodes.v1 import virtual_machine_pb2, virtual_machine_service_pb2, virtual_machine_service_pb2_grpc

OS_TPL = "http://schemas.wnodes.infn.it/occi/infrastructure/os_tpl#"
RESOURCE_TPL = "http://schemas.wnodes.infn.it/occi/infrastructure/resource_tpl#"
RENDERINGS = ("text/plain", "text/occi", "text/uri-list", "application/occi+json")


def _basic(user: dict[str, str]) -> dict[str, str]:
    token = base64.b64encode(f"{user['name']}:{user['password']}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def _ssh_ok(endpoint: str, key: Path) -> bool:
    host, _, port = endpoint.rpartition(":")
    argv = ["ssh", "-i", str(key), "-p", port, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR", f"root@{host}", "true"]
    return subprocess.run(argv, capture_output=True, timeout=30).returncode == 0


def _wait_ssh(endpoint: str, key: Path, deadline: float) -> None:
    while not _ssh_ok(endpoint, key):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no SSH on {endpoint}")
        time.sleep(0.2)


async def _occi_boot(stack: Stack, key: Path, public: str) -> float:
    state = stack.state
    assert state is not None
    user = state.occi_users[0]
    body = "\n".join([
        'Category: compute; scheme="http://schemas.ogf.org/occi/infrastructure#"; class="kind"',
        f'Category: debian12; scheme="{OS_TPL}"; class="mixin"',
        f'Category: small; scheme="{RESOURCE_TPL}"; class="mixin"',
        'Category: ssh_key; scheme="http://schemas.ogf.org/occi/infrastructure/credentials#"; class="mixin"',
        f'X-OCCI-Attribute: occi.credentials.ssh.publickey="{public}"',
    ]) + "\n"
    headers = {**_basic(user), "Content-Type": "text/plain", "Accept": "text/plain"}
    started = time.monotonic()
    async with aiohttp.ClientSession(base_url=state.occi) as http:
        async with http.post("/compute/", headers=headers, data=body) as r:
            assert r.status == 201, await r.text()
            path = URL(r.headers["Location"]).path
        endpoint = ""
        while not endpoint:
            async with http.get(path, headers=headers) as r:
                text = await r.text()
            attrs = dict(line.removeprefix("X-OCCI-Attribute: ").split("=", 1) for line in text.splitlines()
                         if line.startswith("X-OCCI-Attribute: "))
            if attrs.get("occi.compute.state") == '"active"':
                endpoint = attrs.get("it.infn.wnodes.compute.ssh.endpoint", "").strip('"')
            else:
                await asyncio.sleep(0.2)
        await asyncio.to_thread(_wait_ssh, endpoint, key, started + 300)
        elapsed = time.monotonic() - started
        async with http.delete(path, headers=headers) as r:
            assert r.status in (200, 204)
    return elapsed


def _grpc_boot(stack: Stack, key: Path, public: str) -> float:
    state = stack.state
    assert state is not None
    user = state.occi_users[0]
    started = time.monotonic()
    with Client(state.gateway, user=user["name"], vo=user["vo"]) as client:
        vm = client.create_vm("debian12", 1, 512, ssh_public_keys=[public]).result(timeout=300)
        _wait_ssh(vm.ssh_endpoint, key, started + 300)
        elapsed = time.monotonic() - started
        client.delete_vm(vm.name).result(timeout=120)
    return elapsed


def ssh_ready(work: Path, images: Path, runs: int) -> dict[str, Any]:
    stack = Stack(work / "occi-ssh")
    stack.up("libvirt", 1, images)
    key = work / "bench_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    public = key.with_suffix(".pub").read_text().strip()
    occi: list[float] = []
    grpc_api: list[float] = []
    try:
        for _ in range(runs):  # interleaved, so drift in the machine's load hits both
            occi.append(asyncio.run(_occi_boot(stack, key, public)))
            grpc_api.append(_grpc_boot(stack, key, public))
    finally:
        stack.down()
    return {"occi_p50_s": percentile(occi, 50), "grpc_p50_s": percentile(grpc_api, 50), "runs": runs, "occi_s": occi, "grpc_s": grpc_api}


async def _fill(gateway: str, principal: Principal, total: int) -> None:
    async with grpc.aio.insecure_channel(gateway) as channel:
        stub = virtual_machine_service_pb2_grpc.VirtualMachineServiceStub(channel)
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(total):
            queue.put_nowait(i)

        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                await stub.CreateVirtualMachine(virtual_machine_service_pb2.CreateVirtualMachineRequest(
                    virtual_machine=virtual_machine_pb2.VirtualMachine(image="tiny", vcpu_count=1, memory_mib=128),
                    request_id=uuid.uuid4().hex), metadata=principal.to_metadata(), timeout=60)

        await asyncio.gather(*(worker() for _ in range(16)))


async def _rps(base: str, headers: dict[str, str], accept: str, seconds: float) -> tuple[float, int]:
    count, entities = 0, 0
    # text/occi puts the collection in one X-OCCI-Location header: about 50 kB for 1,000 entities.
    async with aiohttp.ClientSession(base_url=base, max_field_size=1 << 20, max_line_size=1 << 20) as http:
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            async with http.get("/compute/", headers={**headers, "Accept": accept}) as r:
                body = await r.read()
                assert r.status == 200, body[:200]
                entities = max(entities, body.count(b"/compute/") + (len(r.headers.getall("X-OCCI-Location", [])) if accept == "text/occi" else 0))
            count += 1
        return count / (time.monotonic() - started), entities


def _grpc_list_rps(gateway: str, principal: Principal, seconds: float) -> float:
    with grpc.insecure_channel(gateway) as channel:
        stub = virtual_machine_service_pb2_grpc.VirtualMachineServiceStub(channel)
        count, started = 0, time.monotonic()
        while time.monotonic() - started < seconds:
            token = ""
            while True:
                page = stub.ListVirtualMachines(virtual_machine_service_pb2.ListVirtualMachinesRequest(page_token=token, page_size=500),
                                                metadata=principal.to_metadata(), timeout=30)
                token = page.next_page_token
                if not token:
                    break
            count += 1
        return count / (time.monotonic() - started)


def collection_rps(work: Path, entities: int = 1000, seconds: float = 5.0) -> dict[str, Any]:
    stack = Stack(work / "occi-list")
    stack.up("fake", 10, work / "no-images", fake_vcpus=256, fake_memory_mib=1 << 20)
    try:
        state = stack.state
        assert state is not None
        user = state.occi_users[0]
        principal = Principal(user["name"], user["vo"])
        asyncio.run(_fill(state.gateway, principal, entities))
        result: dict[str, Any] = {"entities": entities, "grpc_list_per_s": _grpc_list_rps(state.gateway, principal, seconds)}
        for accept in RENDERINGS:
            rps, seen = asyncio.run(_rps(state.occi, _basic(user), accept, seconds))
            result[accept] = {"per_s": rps, "entities_seen": seen}
        return result
    finally:
        stack.down()


def run(work: Path, images: Path, runs: int) -> dict[str, Any]:
    return {"ssh_ready": ssh_ready(work, images, runs), "collection": collection_rps(work)}
