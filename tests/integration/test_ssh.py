"""SSH keys and user data through the public API on the fake-driver stack: the endpoint is
recorded and kept across stop/start; bad input is refused with a message that says why."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import grpc
import pytest

from clients.wnodes_client import Client, WnodesRpcError
from deploy.stack.stack import Stack
from tests.integration.conftest import venv_bin, wnodes_env
from wnodes.v1 import virtual_machine_pb2, virtual_machine_service_pb2, virtual_machine_service_pb2_grpc

pytestmark = pytest.mark.integration
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@example"


def test_endpoint_is_recorded_and_kept_across_stop_and_start(client: Client) -> None:
    vm = client.create_vm("tiny", ssh_public_keys=[KEY], user_data=b"#!/bin/sh\ntrue\n").result(timeout=60)
    plain = client.create_vm("tiny").result(timeout=60)
    try:
        host, port = vm.ssh_endpoint.rsplit(":", 1)
        assert host == "127.0.0.1" and 22000 <= int(port) <= 22999
        assert plain.ssh_endpoint == ""
        assert client.get_vm(vm.name).ssh_endpoint == vm.ssh_endpoint
        assert vm.user_data == b"#!/bin/sh\ntrue\n"
        client.stop_vm(vm.name).result(timeout=60)
        assert client.start_vm(vm.name).result(timeout=60).ssh_endpoint == vm.ssh_endpoint
    finally:
        client.delete_vm(vm.name).result(timeout=60)
        client.delete_vm(plain.name).result(timeout=60)


def test_bad_keys_are_invalid(client: Client) -> None:
    with pytest.raises(WnodesRpcError) as info:
        client.create_vm("tiny", ssh_public_keys=[KEY, "ssh-ed25519 AAAA\nssh-rsa smuggled"])
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and info.value.reason == "INVALID_SSH_KEY"
    assert "ssh_public_keys[1]" in info.value.message


def test_user_data_twice_with_different_bytes_is_invalid(fake_stack: Stack) -> None:
    state = fake_stack.state
    assert state is not None
    request = virtual_machine_service_pb2.CreateVirtualMachineRequest(
        virtual_machine=virtual_machine_pb2.VirtualMachine(image="tiny", vcpu_count=1, memory_mib=256, user_data=b"a"),
        user_data=b"b",
    )
    with grpc.insecure_channel(state.gateway) as channel:
        stub = virtual_machine_service_pb2_grpc.VirtualMachineServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.CreateVirtualMachine(request, metadata=(("wnodes-user", "alice"), ("wnodes-vo", "atlas")))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "user_data is given twice" in info.value.details()  # type: ignore[attr-defined]


def test_cli_create_with_a_key_file_then_show(fake_stack: Stack, tmp_path: Path) -> None:
    pub = tmp_path / "id_ed25519.pub"
    pub.write_text(KEY + "\n")

    def wnodes(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([venv_bin("wnodes"), *args], capture_output=True, text=True, env=wnodes_env(fake_stack), timeout=120)

    created = wnodes("vm", "create", "--image", "tiny", "--ssh-key", str(pub), "--output", "json")
    assert created.returncode == 0, created.stderr
    vm = json.loads(created.stdout)
    assert vm["ssh_endpoint"].startswith("127.0.0.1:")
    shown = wnodes("vm", "show", vm["name"])
    assert f"ssh         {vm['ssh_endpoint']}" in shown.stdout
    assert wnodes("vm", "delete", vm["name"]).returncode == 0
