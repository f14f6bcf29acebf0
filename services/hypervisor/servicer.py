"""gRPC edge of the hypervisor agent: Exec into a guest's channel; what the hypervisor runs."""

from __future__ import annotations

import shlex
import uuid
from collections.abc import AsyncIterator, Sequence

from services.common.errors import InvalidArgument, VirtualMachineNotFound
from services.common.grpc_errors import maps_errors
from services.common.grpc_types import Ctx
from services.hypervisor.drivers.base import Exit, Stderr, Stdout
from services.hypervisor.exec_sessions import ExecSessions
from services.hypervisor.lifecycle import Agent
from wnodes.hypervisor.v1 import agent_service_pb2, agent_service_pb2_grpc
from wnodes.v1 import virtual_machine_service_pb2

DEFAULT_READY_TIMEOUT = 180.0


def shell_command(argv: Sequence[str]) -> str:
    """One element is a shell script as given; several are an argv, quoted for the guest's sh."""
    if not argv:
        raise InvalidArgument("command is empty: give the program to run and its arguments", reason="EMPTY_COMMAND")
    return argv[0] if len(argv) == 1 else shlex.join(argv)


class AgentServicer(agent_service_pb2_grpc.AgentServiceServicer):
    def __init__(self, agents: Sequence[Agent], sessions: ExecSessions) -> None:
        self._agents = list(agents)
        self._sessions = sessions

    def _agent_for(self, vm_id: str) -> Agent:
        if len(self._agents) == 1:
            return self._agents[0]
        for agent in self._agents:
            if agent.owns(vm_id):
                return agent
        raise VirtualMachineNotFound(f"virtualMachines/{vm_id} is not on this agent's hosts")

    @maps_errors
    async def ListDomains(self, request: agent_service_pb2.ListDomainsRequest, context: Ctx) -> agent_service_pb2.ListDomainsResponse:
        response = agent_service_pb2.ListDomainsResponse()
        for agent in self._agents:
            for info in await agent.driver.list():
                response.domains.add(hypervisor=agent.cfg.host, vm_id=info.vm_id, running=info.running)
        return response

    @maps_errors
    async def Exec(
        self, request: agent_service_pb2.ExecRequest, context: Ctx
    ) -> AsyncIterator[virtual_machine_service_pb2.ExecVirtualMachineResponse]:
        command = shell_command(request.command)
        timeout = request.ready_timeout_seconds or DEFAULT_READY_TIMEOUT
        agent = self._agent_for(request.vm_id)
        exec_id = request.exec_id or uuid.uuid4().hex
        session = await self._sessions.open(
            request.vm_id, exec_id, lambda: agent.ready_guest(request.vm_id, timeout), command, request.uid,
            marker_dir=agent.cfg.run_dir / request.vm_id / "execs",
        )
        async for event in session.follow(request.stdout_offset, request.stderr_offset):
            match event:
                case Stdout(data):
                    yield virtual_machine_service_pb2.ExecVirtualMachineResponse(stdout=data)
                case Stderr(data):
                    yield virtual_machine_service_pb2.ExecVirtualMachineResponse(stderr=data)
                case Exit(code):
                    yield virtual_machine_service_pb2.ExecVirtualMachineResponse(exit_code=code)
