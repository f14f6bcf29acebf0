"""Checks on what a caller asks for, with messages that say what is wrong."""

from __future__ import annotations

import re

from services.common.errors import InvalidArgument

MIN_MEMORY_MIB = 128  # guests below ~96 MiB do not boot (docs: ENVIRONMENT.md)
MAX_MEMORY_MIB = 4 * 1024 * 1024  # 4 TiB: anything above is a typo, not a request
MAX_VCPUS = 1024
MAX_LABELS = 64
MAX_USER_DATA = 64 * 1024

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
