"""X.509 login over TLS: an end-entity certificate, an RFC 3820 proxy of it (what grid users
hold), and an unknown subject. Certificates are made here with a throw-away CA."""

from __future__ import annotations

import datetime
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.gateway.occi.core_backend import CoreCloudBackend
from services.gateway.occi.server import OcciConfig, start_occi
from services.gateway.occi.site_users import write_user_file
from services.testing.control_plane import ControlPlane
from tests.occi_helpers import ALICE, category, plain

PROXY_CERT_INFO = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.14")
# ProxyCertInfo ::= SEQUENCE { proxyPolicy SEQUENCE { policyLanguage id-ppl-inheritAll } }
INHERIT_ALL = bytes.fromhex("300c300a06082b06010505071501")
NOW = datetime.datetime.now(datetime.UTC)


@dataclass
class Pki:
    dir: Path
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def _name(*rdns: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.RelativeDistinguishedName([x509.NameAttribute(oid, value)]) for oid, value in rdns])


def _cert(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, signer: ec.EllipticCurvePrivateKey,
          ca: bool = False, proxy: bool = False, san: str = "") -> x509.Certificate:
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(NOW - datetime.timedelta(minutes=5))
               .not_valid_after(NOW + datetime.timedelta(hours=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
    else:
        builder = builder.add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
    if proxy:
        builder = builder.add_extension(x509.UnrecognizedExtension(PROXY_CERT_INFO, INHERIT_ALL), critical=True)
    if san:
        import ipaddress

        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(san))]), critical=False)
    return builder.sign(signer, hashes.SHA256())


def _pem(*items: x509.Certificate | ec.EllipticCurvePrivateKey) -> bytes:
    out = b""
    for item in items:
        if isinstance(item, x509.Certificate):
            out += item.public_bytes(serialization.Encoding.PEM)
        else:
            out += item.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return out


ALICE_DN = _name((NameOID.DOMAIN_COMPONENT, "org"), (NameOID.DOMAIN_COMPONENT, "wnodes"), (NameOID.COMMON_NAME, "Alice"))


@pytest.fixture
async def tls_server(tmp_path: Path, plane: ControlPlane) -> AsyncIterator[tuple[str, Path]]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name((NameOID.ORGANIZATION_NAME, "WNoDeS test CA"))
    ca = _cert(ca_name, ca_name, ca_key, ca_key, ca=True)
    (tmp_path / "ca").mkdir()
    (tmp_path / "ca" / "test-ca.pem").write_bytes(_pem(ca))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _cert(_name((NameOID.COMMON_NAME, "127.0.0.1")), ca_name, server_key, ca_key, san="127.0.0.1")
    (tmp_path / "server.pem").write_bytes(_pem(server, server_key))
    alice_key = ec.generate_private_key(ec.SECP256R1())
    alice = _cert(ALICE_DN, ca_name, alice_key, ca_key)
    (tmp_path / "alice.pem").write_bytes(_pem(alice, alice_key))
    proxy_key = ec.generate_private_key(ec.SECP256R1())
    proxy_dn = x509.Name([*ALICE_DN.rdns, x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, "1234567")])])
    proxy = _cert(proxy_dn, ALICE_DN, proxy_key, alice_key, proxy=True)
    (tmp_path / "proxy.pem").write_bytes(_pem(proxy, proxy_key, alice))  # as X509_USER_PROXY holds it
    eve_key = ec.generate_private_key(ec.SECP256R1())
    eve = _cert(_name((NameOID.COMMON_NAME, "Eve")), ca_name, eve_key, ca_key)
    (tmp_path / "eve.pem").write_bytes(_pem(eve, eve_key))
    write_user_file(tmp_path / "users.toml", [("alice", "atlas", "alice-secret", "/DC=org/DC=wnodes/CN=Alice")], rounds=4)
    cfg = OcciConfig("127.0.0.1:0", tmp_path / "users.toml", None, tmp_path / "server.pem", tmp_path / "server.pem", tmp_path / "ca")
    runner, url = await start_occi(cfg, CoreCloudBackend(plane.core))
    yield url, tmp_path
    await runner.cleanup()


def _client_context(pki: Path, credential: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca" / "test-ca.pem"))
    if credential:
        ctx.load_cert_chain(str(pki / credential))
    return ctx


async def _get(url: str, pki: Path, credential: str | None, headers: dict[str, str] | None = None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url + "/compute/", ssl=_client_context(pki, credential), headers=headers) as r:
        return r.status, await r.text()


@pytest.mark.parametrize("credential", ["alice.pem", "proxy.pem"])
async def test_certificate_and_rfc3820_proxy_log_in_as_the_mapped_user(tls_server: tuple[str, Path], credential: str) -> None:
    url, pki = tls_server
    ctx = _client_context(pki, credential)
    async with aiohttp.ClientSession() as session:
        async with session.post(url + "/compute/", ssl=ctx, headers={"Content-Type": "text/plain"}, data=plain(category("compute"))) as r:
            assert r.status == 201, await r.text()
            location = r.headers["Location"]
    assert url in location
    status, text = await _get(url, pki, None, ALICE)  # the same user with a password sees it
    assert status == 200 and location in text


async def test_unknown_subject_and_no_credential_are_401(tls_server: tuple[str, Path]) -> None:
    url, pki = tls_server
    status, text = await _get(url, pki, "eve.pem")
    assert status == 401 and "/CN=Eve is not a user of this site" in text
    status, _ = await _get(url, pki, None)
    assert status == 401
