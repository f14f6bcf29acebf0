"""The OCCI use cases, one method each, over a CloudBackend: protocol-neutral (no HTTP, no
renderings). Requests arrive already checked by ``validation.py``; anything that needs the
backend to decide (does the link target exist?) is asked before the first change is made, and a
compute whose inline links fail is deleted again, so a failed create leaves nothing."""

from __future__ import annotations

import base64
import binascii
import logging
import re
import time
from dataclasses import dataclass, field

from services.common import names
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, WnodesError
from services.common.identity import Principal
from services.gateway.occi import infrastructure as infra
from services.gateway.occi import locations, views
from services.gateway.occi.categories import Action, Kind, Mixin, Value
from services.gateway.occi.cloud_backend import CloudBackend, Compute, ComputeSpec, ImageTemplate, NetworkSpec, StorageSpec
from services.gateway.occi.entities import EntityView
from services.gateway.occi.model import Model
from services.gateway.occi.templates import Size, os_tpl
from services.gateway.occi.user_mixins import UserMixins
from services.gateway.occi.validation import EntityRequest, LinkRequest

LOG = logging.getLogger(__name__)
_VIRTIO_DEVICE = re.compile(r"^(/dev/)?(vd[b-z])$")
_UNKEPT = {infra.STORAGE: ("occi.core.summary",), infra.NETWORK: ("occi.core.summary", "occi.network.label"),
           infra.STORAGELINK: ("occi.storagelink.mountpoint",)}
"""Attributes the spec declares that this provider has nowhere to keep (or, for a mountpoint,
cannot carry out: nothing mounts inside the guest): refused rather than silently dropped."""


def _refuse_unkept(kind: Kind, attributes: dict[str, Value]) -> None:
    for name in _UNKEPT.get(kind, ()):
        if attributes.get(name) not in (None, ""):
            raise InvalidArgument(f"{name}: a {kind.term} of this provider keeps no such value", reason="ATTRIBUTE_NOT_SUPPORTED")


def _virtio_device(deviceid: str) -> str:
    """The virtio disk a client's deviceid names ("/dev/vdc" or "vdc"), or "" for the first free
    one: any other name ("/dev/sdb", "/dev/blk0") is a hint this provider cannot honour, as Nova
    treats a device name; the link then shows the device it got."""
    found = _VIRTIO_DEVICE.match(deviceid.strip())
    return found.group(2) if found else ""


@dataclass
class OcciService:
    backend: CloudBackend
    sizes: tuple[Size, ...]
    default_image: str = "tiny"
    """Image of a compute created without an os_tpl (the first visible image if this one is not)."""
    image_cache_seconds: float = 5.0
    user_mixins: UserMixins = field(default_factory=UserMixins)
    _images: dict[tuple[str, str], tuple[float, list[ImageTemplate]]] = field(default_factory=dict)

    # --- the model -------------------------------------------------------------------------

    async def model(self, p: Principal) -> Model:
        key, now = (p.user, p.vo), time.monotonic()
        cached = self._images.get(key)
        if cached is None or now - cached[0] > self.image_cache_seconds:
            cached = (now, await self.backend.list_images(p))
            self._images[key] = cached
        return Model.build([(t.image, t.description) for t in cached[1]], self.sizes, self.user_mixins.of(p))

    # --- reading ---------------------------------------------------------------------------

    async def _links(self, p: Principal) -> tuple[list[EntityView], list[EntityView]]:
        """Storage links and network interfaces."""
        storage_links = [views.storage_link(x) for x in await self.backend.list_storage_links(p)]
        nics = [views.network_interface(x) for x in await self.backend.list_network_interfaces(p)]
        return storage_links, nics

    def _compute_view(self, p: Principal, c: Compute, model: Model, links: list[EntityView]) -> EntityView:
        path = views.location(infra.COMPUTE.location, c.id)
        mine = [link for link in links if link.attributes["occi.core.source"] == path]
        return views.compute(c, model, mine, self.user_mixins.tags_of(p, path))

    async def _all(self, p: Principal, model: Model, kind: Kind) -> list[EntityView]:
        if kind is infra.COMPUTE:
            storage_links, nics = await self._links(p)
            return [self._compute_view(p, c, model, storage_links + nics) for c in await self.backend.list_computes(p)]
        if kind is infra.STORAGE:
            return [views.storage(s, self._tags(p, infra.STORAGE, s.id)) for s in await self.backend.list_storages(p)]
        if kind is infra.NETWORK:
            return [views.network(n, self._tags(p, infra.NETWORK, n.id)) for n in await self.backend.list_networks(p)]
        if kind is infra.STORAGELINK:
            return (await self._links(p))[0]
        if kind is infra.NETWORKINTERFACE:
            return (await self._links(p))[1]
        if kind is infra.RESOURCE:
            return [e for k in (infra.COMPUTE, infra.STORAGE, infra.NETWORK) for e in await self._all(p, model, k)]
        if kind is infra.LINK:
            storage_links, nics = await self._links(p)
            return storage_links + nics
        return []

    def _tags(self, p: Principal, kind: Kind, entity_id: str) -> tuple[Mixin, ...]:
        return self.user_mixins.tags_of(p, views.location(kind.location, entity_id))

    async def collection(self, p: Principal, model: Model, category: Kind | Mixin) -> list[EntityView]:
        if isinstance(category, Kind):
            return await self._all(p, model, category)
        if category.user_defined:
            members = self.user_mixins.members(p, category.id)
            everything = await self._all(p, model, infra.RESOURCE) + await self._all(p, model, infra.LINK)
            return [e for e in everything if e.location in members]
        applies = [k for k in (infra.COMPUTE, infra.STORAGE, infra.NETWORK, infra.STORAGELINK, infra.NETWORKINTERFACE)
                   if model.applies(category, k)] if category.applies else [infra.COMPUTE]
        found = []
        for kind in applies:
            for e in await self._all(p, model, kind):
                if any(m.id == category.id or category.id in m.depends for m in e.mixins):
                    found.append(e)
        return found

    async def get(self, p: Principal, model: Model, path: str) -> EntityView:
        collection, entity_id = locations.split(path)
        kind = model.by_location(collection)
        if not isinstance(kind, Kind) or kind in (infra.ENTITY, infra.RESOURCE, infra.LINK):
            raise NotFound(f"{path} does not exist")
        if kind is infra.COMPUTE:
            storage_links, nics = await self._links(p)
            return self._compute_view(p, await self.backend.get_compute(p, entity_id), model, storage_links + nics)
        if kind is infra.STORAGE:
            return views.storage(await self.backend.get_storage(p, entity_id), self._tags(p, kind, entity_id))
        if kind is infra.NETWORK:
            return views.network(await self.backend.get_network(p, entity_id), self._tags(p, kind, entity_id))
        for link in await self._all(p, model, kind):
            if link.id == entity_id:
                return link
        raise NotFound(f"{path} does not exist")

    # --- creating --------------------------------------------------------------------------

    def _image(self, model: Model, mixins: list[Mixin]) -> str:
        chosen = [model.os_templates[m.id] for m in mixins if m.id in model.os_templates]
        if chosen:
            return chosen[0]
        images = sorted(set(model.os_templates.values()))
        if not images:
            raise FailedPrecondition("no image is available to your VO, so no compute can be created", reason="NO_IMAGE")
        return self.default_image if self.default_image in images else images[0]

    def _size(self, model: Model, request: EntityRequest) -> tuple[int, int, str]:
        for m in request.mixins:
            if m.id in model.sizes:
                size = model.sizes[m.id]
                return size.cores, round(size.memory_gib * 1024), size.term
        default = self.sizes[0]
        cores = request.attributes.get("occi.compute.cores", default.cores)
        memory = request.attributes.get("occi.compute.memory", default.memory_gib)
        assert isinstance(cores, int) and isinstance(memory, int | float)  # checked by validation
        return cores, round(float(memory) * 1024), ""

    @staticmethod
    def _context(request: EntityRequest) -> tuple[list[str], bytes]:
        a = request.attributes
        keys = [k.strip() for name in ("occi.credentials.ssh.publickey", "org.openstack.credentials.publickey.data")
                for k in str(a.get(name, "")).splitlines() if k.strip()]
        for key in keys:
            if not re.match(r"^(ssh-|ecdsa-|sk-)[A-Za-z0-9@.-]+ [A-Za-z0-9+/=]+( .*)?$", key):
                raise InvalidArgument(f"{key[:40]!r}... is not an OpenSSH public key", reason="INVALID_ATTRIBUTE")
        user_data = b""
        for name in ("occi.compute.userdata", "org.openstack.compute.user_data"):
            if name in a:
                try:
                    user_data = base64.b64decode(str(a[name]), validate=True)
                except (binascii.Error, ValueError) as exc:
                    raise InvalidArgument(f"attribute {name} must be base64", reason="INVALID_ATTRIBUTE") from exc
        return keys, user_data

    @staticmethod
    def _text(request: EntityRequest, name: str) -> str:
        return str(request.attributes.get(name, ""))

    async def _check_target(self, p: Principal, link: LinkRequest) -> str:
        collection, target_id = locations.split(link.target)
        try:
            if collection == infra.STORAGE.location:
                await self.backend.get_storage(p, target_id)
            else:
                await self.backend.get_network(p, target_id)
        except NotFound as exc:
            raise InvalidArgument(f"link target {link.target} does not exist", reason="LINK_TARGET_NOT_FOUND") from exc
        return target_id

    async def _make_link(self, p: Principal, compute_id: str, link: LinkRequest, target_id: str) -> EntityView:
        if link.kind is infra.STORAGELINK:
            device = _virtio_device(str(link.attributes.get("occi.storagelink.deviceid", "")))
            return views.storage_link(await self.backend.attach_storage(p, compute_id, target_id, device))
        address = str(link.attributes.get("occi.networkinterface.address", ""))
        return views.network_interface(await self.backend.create_network_interface(p, compute_id, target_id, address))

    async def create(self, p: Principal, model: Model, request: EntityRequest) -> EntityView:
        kind = request.kind
        title, summary = self._text(request, "occi.core.title"), self._text(request, "occi.core.summary")
        _refuse_unkept(kind, request.attributes)
        for link in request.links:
            _refuse_unkept(link.kind, link.attributes)
        if kind is infra.STORAGE:
            size = request.attributes["occi.storage.size"]
            assert isinstance(size, float)
            created = views.storage(await self.backend.create_storage(p, StorageSpec(size, title)))
        elif kind is infra.NETWORK:
            vlan = request.attributes.get("occi.network.vlan")
            spec = NetworkSpec(title, vlan if isinstance(vlan, int) else None, self._text(request, "occi.network.address"),
                               self._text(request, "occi.network.gateway"), self._text(request, "occi.network.allocation"))
            created = views.network(await self.backend.create_network(p, spec))
        elif kind is infra.COMPUTE:
            created = await self._create_compute(p, model, request, title, summary)
        else:
            raise InvalidArgument(f"create a {kind.term} in its collection with its source and target", reason="WRONG_KIND")
        self._tag(p, created.location, request.mixins)
        return created

    async def _create_compute(self, p: Principal, model: Model, request: EntityRequest, title: str, summary: str) -> EntityView:
        image = self._image(model, request.mixins)
        cores, memory_mib, template = self._size(model, request)
        keys, user_data = self._context(request)
        targets = [await self._check_target(p, link) for link in request.links]
        if len({link.target for link in request.links}) != len(request.links):
            raise InvalidArgument("the same resource is linked twice", reason="DUPLICATE_LINK")
        storage_ids = [t for link, t in zip(request.links, targets, strict=True) if link.kind is infra.STORAGELINK]
        spec = ComputeSpec(image, cores, memory_mib, title, summary, template, keys, user_data, storage_ids)
        compute = await self.backend.create_compute(p, spec)
        LOG.info("OCCI: %s/%s created compute %s (%s, %d cores, %d MiB)", p.user, p.vo, compute.id, image, cores, memory_mib)
        made: list[EntityView] = []
        try:
            for link, target_id in zip(request.links, targets, strict=True):
                made.append(await self._make_link(p, compute.id, link, target_id))
        except WnodesError:
            LOG.info("OCCI: links of compute %s failed; deleting it", compute.id)
            await self._undo(p, compute.id, made)
            raise
        return self._compute_view(p, compute, model, made)

    async def _undo(self, p: Principal, compute_id: str, made: list[EntityView]) -> None:
        for link in made:
            try:
                if link.kind is infra.STORAGELINK:
                    await self.backend.detach_storage(p, link.id)
                else:
                    await self.backend.delete_network_interface(p, link.id)
            except WnodesError as exc:
                LOG.warning("OCCI: could not undo %s: %s", link.location, exc.message)
        await self.backend.delete_compute(p, compute_id)

    async def create_link(self, p: Principal, model: Model, link: LinkRequest, source: str) -> EntityView:
        _, compute_id = locations.split(source)
        try:
            await self.backend.get_compute(p, compute_id)
        except NotFound as exc:
            raise InvalidArgument(f"link source {source} does not exist", reason="LINK_SOURCE_NOT_FOUND") from exc
        _refuse_unkept(link.kind, link.attributes)
        target_id = await self._check_target(p, link)
        created = await self._make_link(p, compute_id, link, target_id)
        self._tag(p, created.location, link.mixins)
        return created

    def _tag(self, p: Principal, path: str, mixins: list[Mixin], replace: bool = False) -> None:
        tags = {m.id for m in mixins if m.user_defined}
        for m in self.user_mixins.of(p):
            if m.id in tags:
                self.user_mixins.tag(p, m.id, [path])
            elif replace:
                self.user_mixins.untag(p, m.id, [path])

    # --- changing --------------------------------------------------------------------------

    async def update(self, p: Principal, model: Model, path: str, request: EntityRequest, replace: bool) -> EntityView:
        """POST (partial, replace=False) or PUT (full, replace=True) on an existing entity. Only
        the title and summary of a compute can change; anything else must equal what it is."""
        current = await self.get(p, model, path)
        given_id = request.given_provider_values.get("occi.core.id")
        if given_id is not None and given_id != current.id:
            raise InvalidArgument(f"occi.core.id is {current.id} at {path}, not {given_id}", reason="ID_MISMATCH")
        provider_mixins = {m.id for m in current.mixins if not m.user_defined and m is not infra.SSH_ACCESS}
        asked = {m.id for m in request.mixins if not m.user_defined and m is not infra.SSH_ACCESS}
        new = asked - provider_mixins
        if new or (replace and provider_mixins - asked and asked):
            raise FailedPrecondition(f"the templates and mixins of {path} cannot change after creation "
                                     f"(asked: {', '.join(sorted(new or provider_mixins - asked))})", reason="MIXINS_IMMUTABLE")
        changes: dict[str, Value] = {}
        for name, value in request.attributes.items():
            if name in ("occi.core.title", "occi.core.summary"):
                continue
            if current.attributes.get(name) != value:
                changes[name] = value
        if changes:
            raise FailedPrecondition(f"{', '.join(sorted(changes))} of {path} cannot change after creation", reason="ATTRIBUTE_IMMUTABLE")
        title = self._text(request, "occi.core.title") if replace or "occi.core.title" in request.attributes else current.attributes.get("occi.core.title", "")
        summary = self._text(request, "occi.core.summary") if replace or "occi.core.summary" in request.attributes else current.attributes.get("occi.core.summary", "")
        self._tag(p, path, request.mixins, replace=replace)
        if (title, summary) == (current.attributes.get("occi.core.title", ""), current.attributes.get("occi.core.summary", "")):
            return await self.get(p, model, path)
        if current.kind is not infra.COMPUTE:
            raise FailedPrecondition(f"the title and summary of a {current.kind.term} cannot change after creation",
                                     reason="ATTRIBUTE_IMMUTABLE")
        await self.backend.update_compute(p, current.id, str(title), str(summary))
        return await self.get(p, model, path)

    async def delete(self, p: Principal, model: Model, path: str) -> None:
        current = await self.get(p, model, path)
        kind = current.kind
        if kind is infra.COMPUTE:
            await self.backend.delete_compute(p, current.id)
        elif kind is infra.STORAGE:
            await self.backend.delete_storage(p, current.id)
        elif kind is infra.NETWORK:
            await self.backend.delete_network(p, current.id)
        elif kind is infra.STORAGELINK:
            await self.backend.detach_storage(p, current.id)
        else:
            await self.backend.delete_network_interface(p, current.id)
        self.user_mixins.forget(p, path)
        LOG.info("OCCI: %s/%s deleted %s", p.user, p.vo, path)

    async def act(self, p: Principal, model: Model, path: str, action: Action, attrs: dict[str, Value]) -> EntityView | Mixin:
        """Triggers an action; ``save`` answers with the new os_tpl mixin."""
        current = await self.get(p, model, path)
        entity_id = current.id
        if action is infra.SAVE:
            image = str(attrs.get("name") or f"{current.mixins[0].term}-{entity_id}").lower()
            if not names.is_image_name(image):
                raise InvalidArgument(f"save: {image[:70]!r} is not an image name (a-z, 0-9, '.', '_', '-')", reason="INVALID_ATTRIBUTE")
            saved = await self.backend.save_compute(p, entity_id, image)
            self._images.pop((p.user, p.vo), None)
            return os_tpl(saved.image, saved.description or f"image {saved.image}")
        if action in (infra.START, infra.STOP, infra.RESTART, infra.SUSPEND):
            await self.backend.compute_action(p, entity_id, action.term)  # type: ignore[arg-type]
        elif action in (infra.ONLINE, infra.OFFLINE):
            await self.backend.set_storage_online(p, entity_id, action is infra.ONLINE)
        elif action in (infra.UP, infra.DOWN):
            await self.backend.set_network_up(p, entity_id, action is infra.UP)
        LOG.info("OCCI: %s/%s triggered %s on %s", p.user, p.vo, action.term, path)
        return await self.get(p, model, path)

