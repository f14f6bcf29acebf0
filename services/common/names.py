"""The farm's name rules, in one place: image names, resource ids, and the ids the nameserver
mints. Every way in (gRPC, OCCI, the imagestore, the hypervisor driver) checks names here, so a
name one accepts the others accept too.

- An image name is 1-63 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit
  (the imagestore's catalogue rule, which gRPC and OCCI already shared).
- A resource id is 1-63 characters of a-z, 0-9, '-', starting with a letter or digit: a DNS
  label, safe in a file name, a libvirt domain name and a URL path segment. It was the
  strictest of the id rules (OCCI locations also took '.', the libvirt driver capitals and
  '_'); those looser rules admitted only ids that can never exist, since every id is minted
  here (KIND-10 hex digits) and every gRPC name already had to pass this rule. OCCI's storage
  link ids join two resource ids with '.', which is why '.' can never be part of an id.
- Volumes, networks and interfaces are parsed strictly, as the KIND-10 hex digits minted here
  (a VM id is not, for compatibility: callers and tests name VMs 'vm-1').
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from services.common.errors import InvalidArgument

_IMAGE_NAME = r"[a-z0-9][a-z0-9._-]{0,62}"
_RESOURCE_ID = r"[a-z0-9][a-z0-9-]{0,62}"
# Matched with fullmatch: "$" would also match before a trailing newline ("tiny\n").
_IMAGE_NAME_RE = re.compile(_IMAGE_NAME)
_IMAGE_RE = re.compile(rf"(?:images/)?({_IMAGE_NAME})(?:/versions/([0-9]{{1,9}}))?")
_ID_RE = re.compile(_RESOURCE_ID)
_LINK_ID_RE = re.compile(rf"{_RESOURCE_ID}\.{_RESOURCE_ID}")
IMAGE_NAME_RULE = "1-63 characters of a-z, 0-9, '.', '_', '-'"
MINTED_HEX_DIGITS = 10


@dataclass(frozen=True)
class IdKind:
    """A kind of resource whose id the nameserver mints: PREFIX-<10 hex digits>."""

    collection: str
    prefix: str
    noun: str

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile(rf"{self.prefix}-[0-9a-f]{{{MINTED_HEX_DIGITS}}}")


VM = IdKind("virtualMachines", "vm", "virtual machine")
VOLUME = IdKind("volumes", "vol", "volume")
NETWORK = IdKind("networks", "net", "network")
INTERFACE = IdKind("networkInterfaces", "nic", "network interface")
KINDS = (VM, VOLUME, NETWORK, INTERFACE)


def is_image_name(text: str) -> bool:
    return bool(_IMAGE_NAME_RE.fullmatch(text))


def check_image_name(image: str) -> str:
    """A bare image name ('tiny'), or INVALID_IMAGE_NAME."""
    if not is_image_name(image):
        raise InvalidArgument(f"image name {image!r} must be {IMAGE_NAME_RULE}", reason="INVALID_IMAGE_NAME")
    return image


def parse_image(image: str) -> tuple[str, int | None]:
    """'tiny', 'images/tiny' or 'images/tiny/versions/3' -> ('tiny', None|3)."""
    if not image:
        raise InvalidArgument("image is required (e.g. 'tiny' or 'images/tiny/versions/1')", reason="IMAGE_REQUIRED")
    m = _IMAGE_RE.fullmatch(image)
    if not m:
        raise InvalidArgument(
            f"image {image!r} is not a valid image name: use 'NAME' or 'images/NAME/versions/N'",
            reason="INVALID_IMAGE_NAME",
        )
    return m.group(1), int(m.group(2)) if m.group(2) else None


def is_resource_id(text: str) -> bool:
    return bool(_ID_RE.fullmatch(text))


def is_link_id(text: str) -> bool:
    """An OCCI storage link id: the compute's and the storage's ids joined by '.'."""
    return bool(_LINK_ID_RE.fullmatch(text))


def parse_resource_id(name: str, collection: str) -> str:
    """'virtualMachines/vm-1' -> 'vm-1' (a bare id is accepted too)."""
    prefix = f"{collection}/"
    rid = name[len(prefix) :] if name.startswith(prefix) else name
    if not is_resource_id(rid):
        raise InvalidArgument(f"{name!r} is not a valid name: expected '{collection}/ID'", reason="INVALID_NAME")
    return rid


def new_id(kind: IdKind) -> str:
    """A fresh id of that kind ('vol-0123456789'); the caller makes it unique with a txn."""
    return f"{kind.prefix}-{secrets.token_hex(MINTED_HEX_DIGITS // 2)}"


def parse_minted(name: str, kind: IdKind) -> str:
    """'volumes/vol-0123456789' (or the bare id) -> 'vol-0123456789', strictly as minted."""
    rid = name.removeprefix(f"{kind.collection}/")
    if not kind.pattern.fullmatch(rid):
        raise InvalidArgument(
            f"{name!r} is not a {kind.noun} name: expected '{kind.collection}/{kind.prefix}-' and {MINTED_HEX_DIGITS} hex digits",
            reason="INVALID_NAME",
        )
    return rid
