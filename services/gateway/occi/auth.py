"""Who is calling the OCCI interface: an X.509 client certificate (RFC 3820 proxies accepted)
presented over TLS, or HTTP basic auth, both mapped to a local user and VO by the site user
file. The result is the same Principal the gRPC path forwards to the nameservers.

bcrypt is slow on purpose (tens of milliseconds per check): a verified password is remembered
for a few minutes, as a salted digest, so a client's burst of requests costs one check.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import secrets
import ssl
import time
from typing import Any

import bcrypt
from cryptography import x509
from cryptography.x509.oid import NameOID

from services.common.errors import Unauthenticated
from services.common.identity import Principal
from services.gateway.occi.site_users import SiteUsers

PROXY_CERT_INFO = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.14")
CACHE_SECONDS = 300.0
REALM = "WNoDeS OCCI"
_DER = 2  # _ssl.ENCODING_DER


def slash_dn(name: x509.Name) -> str:
    """OpenSSL's one-line form (/DC=org/CN=Alice), the form grid user files use."""
    parts = []
    for rdn in name.rdns:
        items = []
        for attr in rdn:
            key = "emailAddress" if attr.oid == NameOID.EMAIL_ADDRESS else attr.rfc4514_attribute_name
            items.append(f"{key}={attr.value!s}")
        parts.append("+".join(items))
    return "/" + "/".join(parts)


def _is_proxy(cert: x509.Certificate) -> bool:
    try:
        cert.extensions.get_extension_for_oid(PROXY_CERT_INFO)
        return True
    except x509.ExtensionNotFound:
        return False


def identity_dn(chain_der: list[bytes]) -> str:
    """The subject of the end-entity certificate behind a verified chain (leaf first): the
    first certificate that is not an RFC 3820 proxy."""
    for der in chain_der:
        cert = x509.load_der_x509_certificate(der)
        if not _is_proxy(cert):
            return slash_dn(cert.subject)
    raise Unauthenticated("the client certificate chain holds only proxies")


def verified_chain(ssl_object: Any) -> list[bytes]:
    """DER of the peer's verified chain, leaf first (ssl exposes it publicly only from 3.13)."""
    getter = getattr(ssl_object, "get_verified_chain", None) or getattr(getattr(ssl_object, "_sslobj", None), "get_verified_chain", None)
    if getter is None:
        leaf = ssl_object.getpeercert(binary_form=True)
        return [leaf] if leaf else []
    return [c.public_bytes(_DER) for c in getter() or []]


class OcciAuthenticator:
    def __init__(self, users: SiteUsers) -> None:
        self._users = users
        self._pepper = secrets.token_bytes(16)
        self._verified: dict[bytes, float] = {}

    async def authenticate(self, authorization: str | None, ssl_object: ssl.SSLObject | None) -> Principal:
        if ssl_object is not None and ssl_object.getpeercert():
            return self._from_certificate(ssl_object)
        if authorization:
            return await self._from_basic(authorization)
        raise Unauthenticated("authenticate with HTTP basic auth or an X.509 client certificate")

    def _from_certificate(self, ssl_object: ssl.SSLObject) -> Principal:
        dn = identity_dn(verified_chain(ssl_object))
        user = self._users.by_dn.get(dn)
        if user is None:
            raise Unauthenticated(f"certificate subject {dn} is not a user of this site")
        return Principal(user=user.name, vo=user.vo)

    async def _from_basic(self, authorization: str) -> Principal:
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            raise Unauthenticated(f"authorization scheme {scheme[:20]!r} is not supported; use Basic")
        try:
            name, colon, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
            raise Unauthenticated("the Basic credentials are not base64 of user:password") from exc
        user = self._users.by_name.get(name)
        if not colon or user is None or not user.password_bcrypt or not await self._check(password, user.password_bcrypt):
            raise Unauthenticated("wrong user name or password")
        return Principal(user=user.name, vo=user.vo)

    async def _check(self, password: str, hashed: str) -> bool:
        key = hashlib.sha256(self._pepper + hashed.encode() + b"\0" + password.encode()).digest()
        now = time.monotonic()
        if self._verified.get(key, 0.0) > now:
            return True
        try:
            ok = await asyncio.to_thread(bcrypt.checkpw, password.encode(), hashed.encode())
        except ValueError:  # e.g. longer than bcrypt's 72 bytes: it cannot be the password
            return False
        if ok:
            if len(self._verified) > 10000:
                self._verified.clear()
            self._verified[key] = now + CACHE_SECONDS
        return ok
