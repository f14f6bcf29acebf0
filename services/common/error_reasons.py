"""Every ``ErrorInfo.reason`` a WNoDeS service returns, with its status code and what it means.

AIP-193: a reason is a stable, documented identifier that callers may branch on (the message is
for people and may change). Domain code raises the error classes of ``errors.py`` with one of
these reasons (or the class's default); tests/unit/common/test_error_reasons.py scans the source
and fails on a reason that is not here, on one here that nothing raises, and on one raised with
another code. docs/error-reasons.md is rendered from this table (``python -m
services.common.error_reasons > docs/error-reasons.md``; the same test checks it is current).
"""

from __future__ import annotations

from dataclasses import dataclass

from services.common.errors import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    ImageNotFound,
    InvalidArgument,
    NetworkInterfaceNotFound,
    NetworkNotFound,
    NoCapacity,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    VirtualMachineNotFound,
    VolumeNotFound,
    WnodesError,
)


@dataclass(frozen=True)
class Reason:
    name: str
    errors: tuple[type[WnodesError], ...]
    """The error classes it is raised with; their status codes are the reason's codes."""
    meaning: str

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(e.code.name for e in self.errors))


def _r(name: str, error: type[WnodesError] | tuple[type[WnodesError], ...], meaning: str) -> Reason:
    return Reason(name, error if isinstance(error, tuple) else (error,), meaning)


IA, FP = InvalidArgument, FailedPrecondition

SECTIONS: tuple[tuple[str, tuple[Reason, ...]], ...] = (
    ("Defaults of the error tree (services/common/errors.py)", (
        _r("INTERNAL", WnodesError, "An unexpected failure inside a service; its log has the details. Report it if it persists."),
        _r("INVALID_ARGUMENT", IA, "A field of the request is not valid; the message names it."),
        _r("RESOURCE_NOT_FOUND", NotFound, "The named resource does not exist, or is not visible to you."),
        _r("IMAGE_NOT_FOUND", (ImageNotFound, FP), "The image or version does not exist or is not visible to you (FAILED_PRECONDITION: it "
           "left the catalogue while a VM of it was being started)."),
        _r("VIRTUAL_MACHINE_NOT_FOUND", VirtualMachineNotFound, "The virtual machine does not exist, or is not yours."),
        _r("VOLUME_NOT_FOUND", VolumeNotFound, "The volume does not exist, or is not yours."),
        _r("NETWORK_NOT_FOUND", NetworkNotFound, "The network does not exist, or is not visible to you."),
        _r("NETWORK_INTERFACE_NOT_FOUND", NetworkInterfaceNotFound, "The network interface does not exist, or is not yours."),
        _r("RESOURCE_EXISTS", AlreadyExists, "Something with that identity exists already."),
        _r("FAILED_PRECONDITION", FP, "The resource is not in a state that allows the request; the message says which."),
        _r("CONCURRENT_MODIFICATION", Aborted, "The resource changed while the request was applied; send it again."),
        _r("NO_HYPERVISOR_CAPACITY", NoCapacity, "No hypervisor has room for the VM now (cores, memory, or the filters asked for)."),
        _r("PERMISSION_DENIED", PermissionDenied, "You may not do this to that resource."),
        _r("UNAUTHENTICATED", Unauthenticated, "The request carries no valid credentials."),
        _r("BACKEND_UNAVAILABLE", Unavailable, "A service behind the one you called did not answer; retry with backoff."),
        _r("DEADLINE_EXCEEDED", DeadlineExceeded, "The work did not finish in the time it had."),
        _r("NOT_IMPLEMENTED", Unimplemented, "This deployment does not offer the operation."),
    )),
    ("Names, paging and request fields", (
        _r("INVALID_NAME", IA, "A resource name is malformed: expected COLLECTION/ID (services/common/names.py has the rules)."),
        _r("INVALID_IMAGE_NAME", IA, "An image name is malformed: 1-63 characters of a-z, 0-9, '.', '_', '-', or images/NAME/versions/N."),
        _r("IMAGE_REQUIRED", IA, "The request must name an image."),
        _r("IMAGE_NAME_REQUIRED", IA, "The request must name an image (images/NAME), not one version of it."),
        _r("VERSION_REQUIRED", IA, "The request must name one version (images/NAME/versions/N)."),
        _r("INVALID_PAGE_SIZE", IA, "page_size is negative."),
        _r("INVALID_PAGE_TOKEN", IA, "page_token is not one this service returned (or the listing's filter changed)."),
        _r("INVALID_REQUEST_ID", IA, "request_id must be 1-128 characters of letters, digits and ._:-."),
        _r("INVALID_UPDATE_MASK", IA, "update_mask names a field that cannot change (only labels can)."),
        _r("RESERVED_LABEL", IA, "Label keys starting with 'wnodes.' are the farm's own."),
    )),
    ("Virtual machines", (
        _r("INVALID_VCPU_COUNT", IA, "vcpu_count is below 1 or above the farm's maximum."),
        _r("INVALID_MEMORY", IA, "memory_mib is outside the range the farm allows."),
        _r("INVALID_SSH_KEY", IA, "An SSH public key is not one line 'TYPE BASE64 [COMMENT]' of a known type, or there are too many."),
        _r("CONFLICTING_USER_DATA", IA, "user_data is given twice with different bytes; give it once."),
        _r("NO_HYPERVISOR_UP", NoCapacity, "No hypervisor is registered and up, so nothing can be placed."),
        _r("NO_SSH_PORT", NoCapacity, "The VM's hypervisor has no free port left to forward to the guest's SSH server."),
        _r("HYPERVISOR_NOT_FOUND", NotFound, "The named hypervisor is not part of the farm."),
        _r("VM_START_FAILED", FP, "The VM's domain could not be started or its guest did not come up; the VM is FAILED."),
        _r("CONTEXTUALISATION_FAILED", FP, "The guest could not install the SSH keys or user data in time; the VM is FAILED."),
        _r("IMAGE_CHECKSUM_MISMATCH", FP, "An image blob pulled to the hypervisor did not match its sha256; the VM is FAILED."),
        _r("INVALID_POWER_TRANSITION", FP, "The power action does not apply to the VM's state (e.g. resume a VM that is not suspended)."),
        _r("POWER_ACTION_IN_PROGRESS", FP, "Another power action of the VM is still running; ask again once its operation is done."),
        _r("POWER_ACTION_FAILED", FP, "The hypervisor could not carry out the power action; the VM stays as it was."),
        _r("SAVE_IN_PROGRESS", FP, "A save of the VM is still running; ask again once its operation is done."),
        _r("SAVE_FAILED", FP, "The VM's disk could not be saved as an image."),
        _r("NO_IMAGESTORE", FP, "The VM's hypervisor has no imagestore to save to."),
        _r("IMAGE_NOT_OWNED", PermissionDenied, "A save would add a version to an image of another VO; save under a new name."),
        _r("INVALID_VM_STATE", FP, "The VM's state does not allow this (e.g. an interface for a VM being deleted)."),
        _r("VM_BUSY", FP, "A power action or a save of the VM is in progress; attach or detach once it is done."),
    )),
    ("Running commands in VMs (Exec)", (
        _r("EMPTY_COMMAND", IA, "The command is empty: give the program to run and its arguments."),
        _r("INVALID_EXEC_ID", IA, "exec_id must be 1-64 letters, digits, '-' or '_'."),
        _r("EXEC_LOST", FP, "The guest no longer has the command's output (it rebooted, or the channel closed)."),
        _r("VM_NOT_PLACED", FP, "The VM is not on a hypervisor yet (or any more)."),
        _r("VM_NOT_RUNNING", FP, "The VM is stopped or suspended: start or resume it to run commands in it."),
        _r("VM_FAILED", FP, "The VM failed; commands cannot run in it."),
        _r("HYPERVISOR_DOWN", FP, "The VM's hypervisor is down; commands cannot reach it."),
    )),
    ("Images", (
        _r("IMAGE_NOT_AVAILABLE", FP, "The image has no AVAILABLE version to boot."),
        _r("IMAGE_BUILDING", FP, "The version is still being uploaded or built."),
        _r("IMAGE_DEPRECATED", FP, "The version is deprecated: new VMs cannot use it (running ones keep it); use a newer one."),
        _r("IMAGE_DELETED", FP, "The version is deleted."),
        _r("HEADER_REQUIRED", IA, "The first message of an upload must be its header."),
        _r("DUPLICATE_HEADER", IA, "Only the first message of an upload may be a header."),
        _r("DISK_REQUIRED", IA, "An upload's header must declare the disk blob."),
        _r("INVALID_SHA256", IA, "A declared sha256 is not 64 lowercase hex digits."),
        _r("UNDECLARED_PART", IA, "A chunk belongs to a part the header did not declare."),
        _r("BLOB_MISSING", IA, "No data was sent for a part and the imagestore does not hold that blob already."),
        _r("BLOB_SIZE_MISMATCH", IA, "A part's data is longer or shorter than its header declared."),
        _r("BLOB_CHECKSUM_MISMATCH", IA, "A part's data does not have the sha256 its header declared."),
        _r("BLOB_NOT_FOUND", NotFound, "The imagestore holds no blob with that sha256."),
    )),
    ("Image customisation", (
        _r("CUSTOMIZATION_UNAVAILABLE", FP, "This imagestore cannot customise images (no libguestfs)."),
        _r("EMPTY_CUSTOMIZATION", IA, "The request asks for nothing to change."),
        _r("INVALID_FILE_PATH", IA, "A file path must be absolute, without '..'."),
        _r("INVALID_MODULE_NAME", IA, "A kernel module name is malformed."),
        _r("MODULE_NOT_FOUND", IA, "The image's kernel has no module of that name."),
        _r("NO_KERNEL", FP, "Kernel modules need an image with a direct-boot kernel."),
        _r("KERNEL_RELEASE_UNKNOWN", FP, "The kernel release of the image cannot be read from its kernel."),
        _r("KERNEL_MODULES_UNAVAILABLE", FP, "The imagestore has no modules for the image's kernel release."),
        _r("ROOT_FS_UNKNOWN", FP, "The root file system of the image's disk cannot be told apart."),
        _r("GUESTFS_FAILED", FP, "libguestfs failed on the image; the message has its first line."),
        _r("SITE_SCRIPT_FAILED", FP, "The customisation script failed in the image."),
    )),
    ("Volumes", (
        _r("INVALID_SIZE", IA, "size_gib must be more than 0 and at most the farm's maximum."),
        _r("INVALID_TITLE", IA, "A title must be at most 256 printable characters."),
        _r("INVALID_DEVICE", IA, "A device must be one of vdb ... vdz (vda is the root disk)."),
        _r("DEVICE_IN_USE", FP, "The device is taken by another volume of the VM, or the VM has no device left."),
        _r("VOLUME_ATTACHED", FP, "The volume is attached: detach it first."),
        _r("VOLUME_NOT_ATTACHED", FP, "The volume is not attached (to that VM)."),
        _r("VOLUME_NOT_ONLINE", FP, "The volume is offline: bring it online first."),
        _r("VOLUME_ON_OTHER_HYPERVISOR", FP, "The volume's data lives on another hypervisor than the VM's (there is no shared storage)."),
        _r("VOLUME_BUSY", FP, "The volume is being attached or released; ask again in a moment."),
        _r("VOLUME_DELETED", FP, "The volume was deleted before it was attached."),
        _r("VM_DELETED", FP, "The VM was deleted before the volume was attached."),
        _r("VOLUME_ATTACH_FAILED", FP, "The hypervisor could not attach the volume."),
        _r("VOLUME_DETACH_FAILED", FP, "The hypervisor could not detach the volume."),
    )),
    ("Networks", (
        _r("INVALID_CIDR", IA, "cidr is not an IPv4 network like 10.20.0.0/24 (or not one the site allows)."),
        _r("INVALID_VLAN", IA, "vlan is outside 1-4094 (0 has one chosen)."),
        _r("INVALID_ALLOCATION", IA, "allocation must be DYNAMIC or STATIC."),
        _r("INVALID_ADDRESS", IA, "An address or gateway is not a usable host address of the network."),
        _r("ADDRESS_REQUIRED", IA, "The network allocates addresses statically: give the interface's address."),
        _r("ADDRESS_IN_USE", AlreadyExists, "The address is leased to another interface of the network."),
        _r("VLAN_IN_USE", AlreadyExists, "The VLAN id is leased to another network: ask for another or for 0 (any)."),
        _r("NO_FREE_ADDRESS", FP, "The network has no free address left."),
        _r("NO_FREE_SUBNET", FP, "Every subnet of the site's pool is in use: give the network a cidr."),
        _r("NO_FREE_VLAN", FP, "Every VLAN id is leased."),
        _r("NETWORK_IN_USE", FP, "The network has interfaces: delete them first."),
    )),
    ("OCCI (services/gateway/occi)", (
        _r("NOT_ACCEPTABLE", IA, "HTTP 406: no rendering the client accepts (Accept) can answer this request."),
        _r("PAYLOAD_TOO_LARGE", IA, "HTTP 413: the body, or the page asked for, is too big."),
        _r("METHOD_NOT_ALLOWED", IA, "HTTP 405: the method is not defined on this path."),
        _r("OCCI_VERSION_NOT_SUPPORTED", Unimplemented, "HTTP 501: the client speaks a newer OCCI version than 1.2."),
        _r("ABSTRACT_KIND", IA, "The kind is abstract here: create a compute, storage, network, storagelink or networkinterface."),
        _r("ACTION_MISMATCH", IA, "The body names another action than the query string."),
        _r("ATTRIBUTE_IMMUTABLE", FP, "The attribute cannot change after creation."),
        _r("ATTRIBUTE_NOT_SUPPORTED", IA, "This provider keeps no such value for that kind."),
        _r("DUPLICATE_LINK", IA, "The same resource is linked twice."),
        _r("ID_MISMATCH", IA, "occi.core.id in the body is not the id of the location."),
        _r("INVALID_ACTION_TARGET", IA, "Actions are triggered on a kind's collection or on an entity."),
        _r("INVALID_ATTRIBUTE", IA, "An attribute's value does not fit its declaration (type, range, pattern)."),
        _r("INVALID_LOCATION", IA, "A location is not a URI, or not that of an entity (/KIND/ID)."),
        _r("INVALID_MIXIN", IA, "A user mixin is malformed (scheme, term or location), or is not a mixin."),
        _r("INVALID_PAGE", IA, "page and number must be integers from 1."),
        _r("INVALID_QUERY", IA, "The query string has too many parameters."),
        _r("KIND_REQUIRED", IA, "The rendering names no kind."),
        _r("LINK_SOURCE_NOT_FOUND", IA, "A link's source does not exist."),
        _r("LINK_TARGET_NOT_FOUND", IA, "A link's target does not exist."),
        _r("MALFORMED_HEADER", IA, "A header (e.g. Accept) cannot be parsed."),
        _r("MALFORMED_RENDERING", IA, "The body is not a valid rendering of its media type."),
        _r("MISSING_ATTRIBUTE", IA, "A required attribute is not given."),
        _r("MIXINS_IMMUTABLE", FP, "The templates and mixins of an entity cannot change after creation."),
        _r("MIXIN_NOT_APPLICABLE", IA, "The mixin does not apply to the entity's kind."),
        _r("NO_IMAGE", FP, "No image is available to your VO, so no compute can be created."),
        _r("TOO_MANY_KINDS", IA, "An entity has one kind."),
        _r("TOO_MANY_MIXINS", IA, "You have as many user mixins as a user may define."),
        _r("TOO_MANY_TEMPLATES", IA, "At most one os_tpl and one resource_tpl may be given."),
        _r("UNKNOWN_ACTION", IA, "The kind has no such action."),
        _r("UNKNOWN_ATTRIBUTE", IA, "The attribute is not declared by the kind or its mixins."),
        _r("UNKNOWN_CATEGORY", IA, "The category is not one this server offers (see /-/)."),
        _r("UNSUPPORTED_CONTENT_TYPE", IA, "The body's Content-Type is not an OCCI rendering this server parses."),
        _r("UNSUPPORTED_LINK", IA, "Only storage links and network interfaces can be made, from a compute."),
        _r("URI_LIST_NOT_COLLECTION", IA, "text/uri-list renders collections only."),
        _r("WRONG_CATEGORY_CLASS", IA, "A category is given as another class than it is (e.g. an action as a mixin)."),
        _r("WRONG_KIND", IA, "The entity's kind does not belong in this collection."),
        _r("WRONG_LINK_SOURCE", IA, "A link's source must be a compute."),
        _r("WRONG_LINK_TARGET", IA, "A link's target is not of the kind the link points at."),
    )),
)

REASONS: dict[str, Reason] = {r.name: r for _, section in SECTIONS for r in section}

# What a version's state says when it cannot be used (AVAILABLE always can).
_BY_IMAGE_STATE = {"BUILDING": "IMAGE_BUILDING", "DEPRECATED": "IMAGE_DEPRECATED", "DELETED": "IMAGE_DELETED"}


def image_state_reason(state: str) -> str:
    """The reason for a version that its state (BUILDING, DEPRECATED, DELETED) makes unusable."""
    return _BY_IMAGE_STATE.get(state, "IMAGE_NOT_AVAILABLE")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown() -> str:
    """docs/error-reasons.md."""
    lines = [
        "# Error reasons",
        "",
        "Every error of the WNoDeS APIs carries a gRPC status code and a `google.rpc.ErrorInfo` with",
        "domain `wnodes.infn.it` and one of the reasons below (OCCI sends the reason in the",
        "`X-Wnodes-Error-Reason` header). Branch on the reason, not on the message: reasons are stable,",
        "messages are for people.",
        "",
        "Generated from `services/common/error_reasons.py`"
        " (`python -m services.common.error_reasons > docs/error-reasons.md`); do not edit by hand.",
    ]
    for title, section in SECTIONS:
        lines += ["", f"## {title}", "", "| Reason | Code | Meaning |", "|---|---|---|"]
        lines += [f"| `{r.name}` | {', '.join(r.codes)} | {_cell(r.meaning)} |" for r in section]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_markdown(), end="")
