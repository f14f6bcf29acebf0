"""Checks on what a caller asks for, with messages that say what is wrong."""

from __future__ import annotations

import base64
import binascii
import re
import struct

from services.common.errors import InvalidArgument

MIN_MEMORY_MIB = 128  # guests below ~96 MiB do not boot (docs: ENVIRONMENT.md)
MAX_MEMORY_MIB = 4 * 1024 * 1024  # 4 TiB: anything above is a typo, not a request
MAX_VCPUS = 1024
MAX_LABELS = 64
MAX_USER_DATA = 64 * 1024
MAX_SSH_KEYS = 32
MAX_SSH_KEY_LENGTH = 16 * 1024
SSH_KEY_TYPES = frozenset({
    "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
})  # fmt: skip

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def check_size(vcpu_count: int, memory_mib: int) -> None:
    if vcpu_count < 1:
        raise InvalidArgument(f"vcpu_count must be at least 1 (got {vcpu_count})", reason="INVALID_VCPU_COUNT")
    if vcpu_count > MAX_VCPUS:
        raise InvalidArgument(f"vcpu_count must be at most {MAX_VCPUS} (got {vcpu_count})", reason="INVALID_VCPU_COUNT")
    if memory_mib < MIN_MEMORY_MIB or memory_mib > MAX_MEMORY_MIB:
        raise InvalidArgument(
            f"memory_mib must be between {MIN_MEMORY_MIB} and {MAX_MEMORY_MIB} (got {memory_mib})",
            reason="INVALID_MEMORY",
        )


def check_labels(labels: dict[str, str]) -> None:
    if len(labels) > MAX_LABELS:
        raise InvalidArgument(f"at most {MAX_LABELS} labels are allowed (got {len(labels)})")
    for k, v in labels.items():
        if not k or len(k) > 63 or len(v) > 256:
            raise InvalidArgument(f"label {k!r}: keys are 1-63 characters, values at most 256")


def check_user_data(user_data: bytes) -> None:
    if len(user_data) > MAX_USER_DATA:
        raise InvalidArgument(f"user_data is {len(user_data)} bytes; at most {MAX_USER_DATA} are allowed")


def check_request_id(request_id: str) -> None:
    if request_id and not _REQUEST_ID_RE.match(request_id):
        raise InvalidArgument("request_id must be 1-128 characters of letters, digits and ._:-", reason="INVALID_REQUEST_ID")


def check_ssh_public_keys(keys: list[str]) -> list[str]:
    """The keys as they go into authorized_keys: one line each, "TYPE BASE64 [comment]", whose
    blob is really a key of that type. No options (from=, command=): the owner's keys grant a
    plain login, and nothing else can ride along into the guest's authorized_keys."""
    if len(keys) > MAX_SSH_KEYS:
        raise InvalidArgument(f"at most {MAX_SSH_KEYS} ssh_public_keys are allowed (got {len(keys)})", reason="INVALID_SSH_KEY")
    out = []
    for i, raw in enumerate(keys):
        key = raw.strip()
        where = f"ssh_public_keys[{i}]"
        if not key or len(key) > MAX_SSH_KEY_LENGTH or any(c in key for c in "\r\n\0"):
            raise InvalidArgument(
                f"{where} must be one line of at most {MAX_SSH_KEY_LENGTH} characters, as in an id_*.pub file",
                reason="INVALID_SSH_KEY",
            )
        parts = key.split(None, 2)
        if len(parts) < 2 or parts[0] not in SSH_KEY_TYPES:
            raise InvalidArgument(
                f"{where} does not start with a known key type ({', '.join(sorted(SSH_KEY_TYPES))}) and its "
                "base64 blob; give the public key (id_ed25519.pub), not the private one",
                reason="INVALID_SSH_KEY",
            )
        if _blob_key_type(parts[1]) != parts[0]:
            raise InvalidArgument(f"{where}: the base64 blob is not a {parts[0]} public key", reason="INVALID_SSH_KEY")
        out.append(" ".join(parts))
    return out


def _blob_key_type(blob: str) -> str:
    """The key type written inside an OpenSSH public key blob (a length-prefixed string)."""
    try:
        data = base64.b64decode(blob, validate=True)
        (length,) = struct.unpack(">I", data[:4])
        return data[4 : 4 + length].decode("ascii") if 0 < length <= 64 else ""
    except (binascii.Error, struct.error, UnicodeDecodeError, ValueError):
        return ""
