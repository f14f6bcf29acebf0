from __future__ import annotations

import grpc

from services.common.errors import ImageNotFound, NoCapacity, error_from_dict, error_to_dict
from services.common.grpc_errors import error_to_status, status_to_error


def test_status_round_trip_keeps_code_reason_and_metadata() -> None:
    err = NoCapacity("no hypervisor has 8 free vCPUs", metadata={"filter": "cores"})
    back = status_to_error(error_to_status(err))
    assert back.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (back.reason, back.message, back.metadata) == ("NO_HYPERVISOR_CAPACITY", err.message, {"filter": "cores"})


def test_record_round_trip() -> None:
    back = error_from_dict(error_to_dict(ImageNotFound("gone")))
    assert back.code == grpc.StatusCode.NOT_FOUND and back.reason == "IMAGE_NOT_FOUND"
