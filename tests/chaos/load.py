"""Load through the gateway for the chaos suite: workers that create a VM, wait for it, delete it
and start over, retrying what a dead component made fail, with the request's own id so that a
retry can never make a second VM.

Every create request gets a record; its outcome is decided only by what the API answered, so
the invariants can compare it with the registry afterwards.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

from clients.wnodes_client import Client, WnodesRpcError
from wnodes.v1 import virtual_machine_pb2

ACTIVE = virtual_machine_pb2.VirtualMachine.State.ACTIVE
# Answers that mean "a component is down, ask again": never an answer about the request itself.
TRANSIENT = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "ABORTED"}
# How long a worker keeps asking while components restart.
PATIENCE_S = 90.0


@dataclass
class Request:
    request_id: str
    outcome: str = "sent"
    """sent -> accepted -> completed (ACTIVE, then deleted) | failed (a terminal FAILED, then
    deleted) | refused (RESOURCE_EXHAUSTED before acceptance) | unresolved (never settled)."""
    vm: str = ""
    detail: str = ""
    retries: int = 0


@dataclass
class LoadReport:
    requests: list[Request] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        outcomes = Counter(r.outcome for r in self.requests)
        accepted = sum(outcomes[o] for o in ("accepted", "completed", "failed", "unresolved"))
        return {"sent": len(self.requests), "accepted": accepted, "completed": outcomes["completed"],
                "failed": outcomes["failed"], "refused": outcomes["refused"], "unresolved": outcomes["unresolved"],
                "retries": sum(r.retries for r in self.requests)}


class LoadRunner:
    """`workers` threads, each one request in flight at a time, until stop() is called."""

    def __init__(self, gateway: str, workers: int = 6, image: str = "tiny") -> None:
        self._gateway = gateway
        self._workers = workers
        self._image = image
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.report = LoadReport()

    def start(self) -> None:
        for i in range(self._workers):
            thread = threading.Thread(target=self._work, name=f"chaos-load-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, drain_timeout: float = 240.0) -> LoadReport:
        """Stops starting new requests and waits for those in flight to settle."""
        self._stop.set()
        deadline = time.monotonic() + drain_timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return self.report

    def _work(self) -> None:
        with Client(self._gateway, user="chaos", vo="chaos") as client:
            while not self._stop.is_set():
                request = Request(uuid.uuid4().hex)
                with self._lock:
                    self.report.requests.append(request)
                try:
                    self._one(client, request)
                except Exception as exc:  # recorded, never raised: the invariants judge
                    if request.outcome in ("sent", "accepted"):
                        request.outcome = "unresolved" if request.outcome == "accepted" else "sent"
                    request.detail = f"{type(exc).__name__}: {exc}"
                if request.outcome == "sent":
                    request.outcome = "unresolved"  # never answered: as bad as lost

    def _one(self, client: Client, request: Request) -> None:
        op = self._patiently(request, lambda: client.create_vm(self._image, 1, 128, labels={"chaos": "1"}, request_id=request.request_id))
        if op is None:
            return
        request.outcome = "accepted"
        meta = op.metadata
        request.vm = str(getattr(meta, "name", "")) if meta is not None else ""
        try:
            vm = self._patiently(request, lambda: op.result(timeout=120))
        except WnodesRpcError as err:  # the operation ended in an error: a terminal answer
            request.detail = f"{err.code.name}: {err.message}"
            if request.vm:  # a FAILED VM keeps its leases until deleted
                self._delete(client, request, request.vm)
            request.outcome = "failed"
            return
        if vm is None:
            request.outcome = "unresolved"
            return
        request.vm = vm.name
        self._delete(client, request, vm.name)
        request.outcome = "completed" if vm.state == ACTIVE else "failed"

    def _delete(self, client: Client, request: Request, name: str) -> None:
        try:
            self._patiently(request, lambda: client.delete_vm(name).result(timeout=120))
        except WnodesRpcError as err:
            if err.code.name != "NOT_FOUND":  # gone already (a retried delete that did happen)
                raise

    def _patiently(self, request: Request, call):  # type: ignore[no-untyped-def]
        """call() until it answers something other than 'a component is down'."""
        deadline = time.monotonic() + PATIENCE_S
        while True:
            try:
                return call()
            except WnodesRpcError as err:
                if err.code.name == "RESOURCE_EXHAUSTED" and request.outcome == "sent":
                    request.outcome = "refused"
                    return None
                if err.code.name not in TRANSIENT or time.monotonic() > deadline:
                    raise
                request.retries += 1
                time.sleep(0.3)
