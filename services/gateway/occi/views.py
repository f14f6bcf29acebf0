"""CloudBackend data -> EntityView: what each resource and link renders. Every attribute put
here is declared by the view's kind or one of its mixins (tests/unit/occi/test_views.py)."""

from __future__ import annotations

from services.gateway.occi import infrastructure as infra
from services.gateway.occi.categories import Mixin, Value
from services.gateway.occi.cloud_backend import Compute, Network, NetworkInterface, Storage, StorageLink
from services.gateway.occi.entities import EntityView
from services.gateway.occi.model import Model
from services.gateway.occi.templates import os_tpl

_COMPUTE_ACTIONS = {"active": (infra.STOP, infra.RESTART, infra.SUSPEND, infra.SAVE), "inactive": (infra.START, infra.SAVE),
                    "suspended": (infra.START, infra.STOP), "error": (infra.START, infra.STOP)}


def _core(entity_id: str, title: str, summary: str | None = None) -> dict[str, Value]:
    out: dict[str, Value] = {"occi.core.id": entity_id}
    if title:
        out["occi.core.title"] = title
    if summary:
        out["occi.core.summary"] = summary
    return out


def location(kind_location: str, entity_id: str) -> str:
    return f"{kind_location}{entity_id}"


def compute(c: Compute, model: Model, links: list[EntityView] | None = None, tags: tuple[Mixin, ...] = ()) -> EntityView:
    attrs = _core(c.id, c.title, c.summary)
    attrs.update({
        "occi.compute.architecture": c.architecture,
        "occi.compute.cores": c.cores,
        "occi.compute.memory": round(c.memory_mib / 1024, 4),
        "occi.compute.state": c.state,
    })
    if c.hostname:
        attrs["occi.compute.hostname"] = c.hostname
    if c.state_message:
        attrs["occi.compute.state.message"] = c.state_message
    mixins: list[Mixin] = []
    template = next((m for m in (model.mixin(i) for i in model.os_templates if model.os_templates[i] == c.image) if m), None)
    mixins.append(template or os_tpl(c.image))
    size = next((model.mixin(i) for i, s in model.sizes.items() if s.term == c.resource_tpl), None)
    if size is not None:
        mixins.append(size)
    if c.ssh_endpoint:
        mixins.append(infra.SSH_ACCESS)
        attrs["it.infn.wnodes.compute.ssh.endpoint"] = c.ssh_endpoint
    return EntityView(infra.COMPUTE, location(infra.COMPUTE.location, c.id), attrs, (*mixins, *tags),
                      _COMPUTE_ACTIONS[c.state], links or [])


def storage(s: Storage, tags: tuple[Mixin, ...] = ()) -> EntityView:
    attrs = _core(s.id, s.title)
    attrs.update({"occi.storage.size": float(s.size_gib), "occi.storage.state": s.state})
    if s.state_message:
        attrs["occi.storage.state.message"] = s.state_message
    actions = (infra.OFFLINE,) if s.state == "online" else (infra.ONLINE,)
    return EntityView(infra.STORAGE, location(infra.STORAGE.location, s.id), attrs, tags, actions)


def network(n: Network, tags: tuple[Mixin, ...] = ()) -> EntityView:
    attrs = _core(n.id, n.title)
    attrs["occi.network.state"] = n.state
    if n.vlan is not None:
        attrs["occi.network.vlan"] = n.vlan
    if n.state_message:
        attrs["occi.network.state.message"] = n.state_message
    mixins: tuple[Mixin, ...] = ()
    if n.address:
        mixins = (infra.IPNETWORK,)
        attrs["occi.network.address"] = n.address
        if n.gateway:
            attrs["occi.network.gateway"] = n.gateway
        if n.allocation in ("dynamic", "static"):
            attrs["occi.network.allocation"] = n.allocation
    actions = (infra.DOWN,) if n.state == "active" else (infra.UP,)
    return EntityView(infra.NETWORK, location(infra.NETWORK.location, n.id), attrs, (*mixins, *tags), actions)


def storage_link(link: StorageLink) -> EntityView:
    """Says what the guest sees: a virtio disk whose serial is the storage's id (its /dev/vd*
    name is the kernel's choice, in the order it finds disks)."""
    attrs = _core(link.id, "")
    device = link.device.removeprefix("/dev/")
    # No ';' or ',' in the text: naive parsers split inline Link values and text/occi lists on them.
    seen = (f"the guest sees a virtio disk with serial {link.serial} (in /sys/block/vd*/serial or as /dev/disk/by-id/virtio-{link.serial} "
            f"where udev runs) configured as {device} - the kernel names disks in the order it finds them")
    attrs.update({
        "occi.core.source": location(infra.COMPUTE.location, link.compute_id),
        "occi.core.target": location(infra.STORAGE.location, link.storage_id),
        "occi.core.source.kind": infra.COMPUTE.id,
        "occi.core.target.kind": infra.STORAGE.id,
        "occi.storagelink.deviceid": link.device,
        "occi.storagelink.state": link.state,
        "occi.storagelink.state.message": f"{link.state_message} - {seen}" if link.state_message else seen,
        "it.infn.wnodes.storagelink.serial": link.serial,
    })
    return EntityView(infra.STORAGELINK, location(infra.STORAGELINK.location, link.id), attrs, (infra.VIRTIO_DISK,),
                      source_kind=infra.COMPUTE.id, target_kind=infra.STORAGE.id)


def network_interface(nic: NetworkInterface) -> EntityView:
    attrs = _core(nic.id, "")
    attrs.update({
        "occi.core.source": location(infra.COMPUTE.location, nic.compute_id),
        "occi.core.target": location(infra.NETWORK.location, nic.network_id),
        "occi.core.source.kind": infra.COMPUTE.id,
        "occi.core.target.kind": infra.NETWORK.id,
        "occi.networkinterface.interface": nic.interface,
        "occi.networkinterface.mac": nic.mac,
        "occi.networkinterface.state": nic.state,
    })
    mixins: tuple[Mixin, ...] = ()
    if nic.address:
        mixins = (infra.IPNETWORKINTERFACE,)
        attrs["occi.networkinterface.address"] = nic.address
        attrs["occi.networkinterface.allocation"] = nic.allocation if nic.allocation in ("dynamic", "static") else "dynamic"
        if nic.gateway:
            attrs["occi.networkinterface.gateway"] = nic.gateway
    return EntityView(infra.NETWORKINTERFACE, location(infra.NETWORKINTERFACE.location, nic.id), attrs, mixins,
                      source_kind=infra.COMPUTE.id, target_kind=infra.NETWORK.id)
