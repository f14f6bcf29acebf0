"""Chores the agent does inside a guest through its channel, as root: sync its file systems
before its disk is stopped or copied, and let its owner in (contextualisation)."""

from __future__ import annotations

import asyncio
import base64
import logging

from services.common.errors import FailedPrecondition
from services.common.records import VmRecord
from services.hypervisor.drivers.base import DomainInfo, DriverError, Exit, HypervisorDriver, Stderr
from services.hypervisor.ssh_access import contextualisation_script

LOG = logging.getLogger(__name__)


async def sync_guest(driver: HypervisorDriver, vm: VmRecord, domain: DomainInfo | None, timeout: float) -> None:
    """Asks the guest to write what it holds in memory to its disk (a stop or a save must not
    lose the files its owner just wrote). A paused guest is resumed for it. Best effort, bounded:
    a hung guest must not block its owner's stop."""
    if domain is None:
        return
    try:
        async with asyncio.timeout(timeout):
            if domain.paused:
                await driver.resume(vm.id)
            async for event in driver.guest(vm.id).exec("sync"):
                if isinstance(event, Exit) and event.code != 0:
                    LOG.warning("%s: sync in the guest exited %d", vm.name, event.code)
    except (TimeoutError, DriverError) as exc:
        LOG.warning("%s: the guest did not sync (%s); going on without it", vm.name, exc or "timeout")


async def contextualise(driver: HypervisorDriver, vm: VmRecord, timeout: float) -> None:
    """Lets the owner in: keys into authorized_keys, user data stored (and run once), sshd up.
    FailedPrecondition (CONTEXTUALISATION_FAILED) with the guest's reason if it could not."""
    script = contextualisation_script(vm.ssh_public_keys, base64.b64decode(vm.user_data))
    errors, code = b"", None
    try:
        async with asyncio.timeout(timeout):
            async for event in driver.guest(vm.id).exec(script):
                if isinstance(event, Stderr):
                    errors += event.data
                elif isinstance(event, Exit):
                    code = event.code
    except TimeoutError as exc:
        raise FailedPrecondition(f"contextualisation did not finish within {timeout:.0f}s", reason="CONTEXTUALISATION_FAILED") from exc
    if code != 0:
        why = errors.decode(errors="replace").strip()[-500:] or f"exit status {code}"
        raise FailedPrecondition(f"contextualisation failed: {why}", reason="CONTEXTUALISATION_FAILED")
