"""Authentication at the edge: turn whatever the caller presented into a Principal.

``TrustedHeaderAuthenticator`` takes the identity from the ``wnodes-user``/``wnodes-vo``
metadata. It is for a single-machine development stack (loopback only), where the caller is the
local operator; a site deployment uses X.509 (mutual TLS) or tokens in front of it.
"""

from __future__ import annotations

from typing import Protocol

from services.common.errors import Unauthenticated
from services.common.grpc_types import Ctx
from services.common.identity import Principal


class Authenticator(Protocol):
    def authenticate(self, context: Ctx) -> Principal: ...


class TrustedHeaderAuthenticator:
    def authenticate(self, context: Ctx) -> Principal:
        principal = Principal.from_metadata(context.invocation_metadata())
        if principal is None:
            raise Unauthenticated("no identity: send wnodes-user and wnodes-vo metadata (the SDK and CLIs do)")
        return principal
