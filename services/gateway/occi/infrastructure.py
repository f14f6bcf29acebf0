"""The static part of this server's OCCI model: Core (GFD.221), Infrastructure (GFD.224), the
contextualisation and credential mixins (with their EGI/OpenStack legacy twins), and this
provider's own mixin. Templates that depend on the caller (os_tpl per image, resource_tpl per
size) are made in ``templates.py``.

Deliberate readings of the spec, each because the value is the provider's to choose here:
``occi.compute.state``, ``occi.storage.state``, ``occi.network.state``, the link states and
``occi.networkinterface.interface``/``.mac`` are required but immutable (the MAC is leased
farm-wide, never chosen by a client).
"""

from __future__ import annotations

from services.gateway.occi.categories import Action, Attribute, Kind, Mixin

CORE = "http://schemas.ogf.org/occi/core#"
INFRA = "http://schemas.ogf.org/occi/infrastructure#"
COMPUTE_ACTION = "http://schemas.ogf.org/occi/infrastructure/compute/action#"
STORAGE_ACTION = "http://schemas.ogf.org/occi/infrastructure/storage/action#"
NETWORK_ACTION = "http://schemas.ogf.org/occi/infrastructure/network/action#"
NETWORK_MIXIN = "http://schemas.ogf.org/occi/infrastructure/network#"
NETWORKINTERFACE_MIXIN = "http://schemas.ogf.org/occi/infrastructure/networkinterface#"
CREDENTIALS = "http://schemas.ogf.org/occi/infrastructure/credentials#"
COMPUTE_MIXIN = "http://schemas.ogf.org/occi/infrastructure/compute#"
OPENSTACK_CREDENTIALS = "http://schemas.openstack.org/instance/credentials#"
OPENSTACK_COMPUTE = "http://schemas.openstack.org/compute/instance#"
PROVIDER = "http://schemas.wnodes.infn.it/occi/infrastructure#"
"""This provider's scheme (its own mixins)."""


def _state(name: str, choices: tuple[str, ...]) -> tuple[Attribute, Attribute]:
    return (
        Attribute(name, "enum", required=True, mutable=False, provider=True, choices=choices, description="current state"),
        Attribute(f"{name}.message", mutable=False, provider=True, max_length=1024, description="why it is in this state"),
    )


# --- core --------------------------------------------------------------------------------

ENTITY = Kind(CORE, "entity", "Entity", attributes=(
    Attribute("occi.core.id", required=True, mutable=False, provider=True, description="unique identifier, chosen by the provider"),
    Attribute("occi.core.title", description="display name"),
))
RESOURCE = Kind(CORE, "resource", "Resource", parent=ENTITY.id, location="/resource/", attributes=(
    Attribute("occi.core.summary", description="short description"),
))
LINK = Kind(CORE, "link", "Link", parent=ENTITY.id, location="/link/", attributes=(
    Attribute("occi.core.source", required=True, mutable=False, max_length=1024, description="location of the source resource"),
    Attribute("occi.core.target", required=True, mutable=False, max_length=1024, description="location of the target resource"),
    Attribute("occi.core.source.kind", mutable=False, provider=True, description="kind of the source resource"),
    Attribute("occi.core.target.kind", mutable=False, provider=True, description="kind of the target resource"),
))

# --- actions -----------------------------------------------------------------------------

START = Action(COMPUTE_ACTION, "start", "start the compute")
STOP = Action(COMPUTE_ACTION, "stop", "stop the compute", (
    Attribute("method", "enum", choices=("graceful", "acpioff", "poweroff"), default="graceful"),))
RESTART = Action(COMPUTE_ACTION, "restart", "restart the compute", (
    Attribute("method", "enum", choices=("graceful", "warm", "cold"), default="graceful"),))
SUSPEND = Action(COMPUTE_ACTION, "suspend", "suspend the compute", (
    Attribute("method", "enum", choices=("hibernate", "suspend"), default="suspend"),))
SAVE = Action(COMPUTE_ACTION, "save", "save the compute's disk as a new OS template", (
    Attribute("method", "enum", choices=("hot", "deferred"), default="hot"),
    Attribute("name", description="name of the new image (default: derived from the compute)"),
))
ONLINE = Action(STORAGE_ACTION, "online", "bring the storage online")
OFFLINE = Action(STORAGE_ACTION, "offline", "take the storage offline")
UP = Action(NETWORK_ACTION, "up", "bring the network up")
DOWN = Action(NETWORK_ACTION, "down", "take the network down")

# --- infrastructure kinds ----------------------------------------------------------------

COMPUTE = Kind(INFRA, "compute", "Compute Resource", parent=RESOURCE.id, location="/compute/",
               actions=(START.id, STOP.id, RESTART.id, SUSPEND.id, SAVE.id), attributes=(
    Attribute("occi.compute.architecture", "enum", choices=("x86", "x64"), description="CPU architecture"),
    Attribute("occi.compute.cores", "integer", minimum=1, maximum=1024, description="number of virtual cores"),
    Attribute("occi.compute.share", "integer", minimum=0, description="relative CPU share"),
    Attribute("occi.compute.hostname", mutable=False, provider=True, description="hostname, leased by the provider"),
    Attribute("occi.compute.memory", "number", minimum=0.125, maximum=4096, description="memory in GiB"),
    *_state("occi.compute.state", ("active", "inactive", "suspended", "error")),
))
STORAGE = Kind(INFRA, "storage", "Storage Resource", parent=RESOURCE.id, location="/storage/",
               actions=(ONLINE.id, OFFLINE.id), attributes=(
    Attribute("occi.storage.size", "number", required=True, minimum=0.001, maximum=65536, description="size in GiB"),
    *_state("occi.storage.state", ("online", "offline", "error")),
))
NETWORK = Kind(INFRA, "network", "Network Resource", parent=RESOURCE.id, location="/network/",
               actions=(UP.id, DOWN.id), attributes=(
    Attribute("occi.network.vlan", "integer", minimum=0, maximum=4095, description="802.1Q VLAN id"),
    Attribute("occi.network.label", description="tag of the network"),
    *_state("occi.network.state", ("active", "inactive", "error")),
))
STORAGELINK = Kind(INFRA, "storagelink", "Storage Link", parent=LINK.id, location="/storagelink/", attributes=(
    Attribute("occi.storagelink.deviceid", required=True,
              description="virtio disk in the VM, /dev/vdb ... /dev/vdz; another name is a hint this provider cannot honour (it picks one)"),
    Attribute("occi.storagelink.mountpoint", description="where the guest mounts it"),
    *_state("occi.storagelink.state", ("active", "inactive", "error")),
))
NETWORKINTERFACE = Kind(INFRA, "networkinterface", "Network Interface", parent=LINK.id, location="/networkinterface/",
                        attributes=(
    Attribute("occi.networkinterface.interface", required=True, mutable=False, provider=True, description="interface name in the guest"),
    Attribute("occi.networkinterface.mac", required=True, mutable=False, provider=True, description="MAC address, leased by the provider"),
    *_state("occi.networkinterface.state", ("active", "inactive", "error")),
))

# --- mixins ------------------------------------------------------------------------------

IPNETWORK = Mixin(NETWORK_MIXIN, "ipnetwork", "IP Networking Mixin", location="/mixin/ipnetwork/",
                  applies=(NETWORK.id,), attributes=(
    Attribute("occi.network.address", description="CIDR of the network, e.g. 10.1.0.0/24"),
    Attribute("occi.network.gateway", description="gateway address"),
    Attribute("occi.network.allocation", "enum", choices=("dynamic", "static"), description="address allocation"),
))
IPNETWORKINTERFACE = Mixin(NETWORKINTERFACE_MIXIN, "ipnetworkinterface", "IP Network Interface Mixin",
                           location="/mixin/ipnetworkinterface/", applies=(NETWORKINTERFACE.id,), attributes=(
    Attribute("occi.networkinterface.address", required=True, mutable=False,
              description="IP address: leased by the provider, or the one asked for (required on a static network)"),
    Attribute("occi.networkinterface.gateway", mutable=False, provider=True, description="gateway address"),
    Attribute("occi.networkinterface.allocation", "enum", required=True, mutable=False, provider=True, choices=("dynamic", "static")),
))
OS_TPL = Mixin(INFRA, "os_tpl", "OS Template", location="/mixin/os_tpl/", applies=(COMPUTE.id,))
RESOURCE_TPL = Mixin(INFRA, "resource_tpl", "Resource Template", location="/mixin/resource_tpl/", applies=(COMPUTE.id,))
SSH_KEY = Mixin(CREDENTIALS, "ssh_key", "SSH public key for the compute's default user", location="/mixin/ssh_key/",
                applies=(COMPUTE.id,), attributes=(
    Attribute("occi.credentials.ssh.publickey", required=True, mutable=False, max_length=16384, description="OpenSSH public key(s), one a line"),
))
USER_DATA = Mixin(COMPUTE_MIXIN, "user_data", "Contextualisation data for the compute", location="/mixin/user_data/",
                  applies=(COMPUTE.id,), attributes=(
    Attribute("occi.compute.userdata", required=True, mutable=False, max_length=98304, description="base64-encoded user data (cloud-init)"),
))
OPENSTACK_PUBLIC_KEY = Mixin(OPENSTACK_CREDENTIALS, "public_key", "SSH public key (EGI/OpenStack legacy)",
                             location="/mixin/openstack/public_key/", applies=(COMPUTE.id,), attributes=(
    Attribute("org.openstack.credentials.publickey.name", mutable=False, description="name of the key"),
    Attribute("org.openstack.credentials.publickey.data", required=True, mutable=False, max_length=16384, description="OpenSSH public key"),
))
OPENSTACK_USER_DATA = Mixin(OPENSTACK_COMPUTE, "user_data", "Contextualisation data (EGI/OpenStack legacy)",
                            location="/mixin/openstack/user_data/", applies=(COMPUTE.id,), attributes=(
    Attribute("org.openstack.compute.user_data", required=True, mutable=False, max_length=98304, description="base64-encoded user data"),
))
SSH_ACCESS = Mixin(PROVIDER, "ssh_access", "How to reach the compute over SSH", location="/mixin/ssh_access/",
                   applies=(COMPUTE.id,), attributes=(
    Attribute("it.infn.wnodes.compute.ssh.endpoint", mutable=False, provider=True, description="host:port of the compute's SSH server"),
))
"""Rendered on every compute that has an SSH endpoint; a client never needs to send it."""
VIRTIO_DISK = Mixin(PROVIDER, "virtio_disk", "How the guest finds the storage", location="/mixin/virtio_disk/",
                    applies=(STORAGELINK.id,), attributes=(
    Attribute("it.infn.wnodes.storagelink.serial", mutable=False, provider=True,
              description="the disk's serial, the storage's id: /sys/block/vd*/serial in the guest"),
))
"""Rendered on every storage link: the guest kernel names virtio disks in the order it finds them
(a hot-plugged one after a detach may not be the deviceid), so the serial is the stable handle."""

KINDS = (ENTITY, RESOURCE, LINK, COMPUTE, STORAGE, NETWORK, STORAGELINK, NETWORKINTERFACE)
ACTIONS = (START, STOP, RESTART, SUSPEND, SAVE, ONLINE, OFFLINE, UP, DOWN)
MIXINS = (IPNETWORK, IPNETWORKINTERFACE, OS_TPL, RESOURCE_TPL, SSH_KEY, USER_DATA, OPENSTACK_PUBLIC_KEY,
          OPENSTACK_USER_DATA, SSH_ACCESS, VIRTIO_DISK)
CONTEXT_MIXINS = (SSH_KEY, USER_DATA, OPENSTACK_PUBLIC_KEY, OPENSTACK_USER_DATA)
"""Mixins a client sends only on create: their values go to the VM at boot and are not read back."""
