"""Hypothesis strategies for OCCI requests: random and mutated renderings. Shared by the fuzz
test over the in-process control plane and the one against a real gateway. Renderings and paths
name a compute ``COMPUTE_ID`` and a storage ``STORAGE_ID``: a test that made real ones swaps
their ids in (``FuzzRequest.naming``)."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from tests.occi_helpers import INFRA, category, plain

HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=200)
COMPUTE_ID, STORAGE_ID = "vm-000001", "vol-000002"
RESOURCE_TPL = "http://schemas.wnodes.infn.it/occi/infrastructure/resource_tpl#"

VALID_BODIES = [
    plain(category("compute"), 'X-OCCI-Attribute: occi.core.title="fuzz"'),
    plain(category("compute"), f'Category: small; scheme="{RESOURCE_TPL}"; class="mixin"', "X-OCCI-Attribute: occi.compute.cores=2"),
    plain(category("storage"), "X-OCCI-Attribute: occi.storage.size=1.5"),
    plain(category("network"), "X-OCCI-Attribute: occi.network.vlan=7"),
    plain('Category: stop; scheme="http://schemas.ogf.org/occi/infrastructure/compute/action#"; class="action"',
          'X-OCCI-Attribute: method="poweroff"'),
    plain(category("storagelink"), 'X-OCCI-Attribute: occi.core.source="/compute/vm-000001"',
          'X-OCCI-Attribute: occi.core.target="/storage/vol-000002"', 'X-OCCI-Attribute: occi.storagelink.deviceid="/dev/vdb"'),
    plain(category("compute"), f'Link: </storage/vol-000002>; rel="{INFRA}storage"; category="{INFRA}storagelink"'),
    '{"kind": "http://schemas.ogf.org/occi/infrastructure#compute", "attributes": {"occi.compute.memory": 0.5}, "title": "j"}',
    '{"action": "http://schemas.ogf.org/occi/infrastructure/compute/action#start"}',
    '{"mixins": [{"term": "t", "scheme": "http://e.org/x#", "location": "/mixin/t/"}]}',
]
PATHS = ["/-/", "/.well-known/org/ogf/occi/-/", "/", "/compute/", "/storage/", "/network/", "/storagelink/", "/networkinterface/",
         "/link/", "/resource/", "/mixin/os_tpl/", "/mixin/os_tpl/tiny/", "/mixin/resource_tpl/small/", "/compute/vm-000001",
         "/storage/vol-000002", "/compute/vm-000001?action=stop", "/compute/?action=start", "/compute/?page=0&number=-1",
         "/compute/?page=2&number=1", "/storagelink/vm-000001.vol-000002", "/-/?x=%00", "/compute/%2e%2e/x"]
CONTENT_TYPES = ["text/plain", "text/occi", "application/occi+json", "application/json", "text/uri-list", "text/occi+plain", "", "x/y"]
ACCEPTS = ["", "text/plain", "text/occi", "application/occi+json", "text/uri-list", "*/*", "text/html", "application/*;q=0.1"]


def _header_safe(text: str) -> str:
    """Header values a client can send at all (no control characters, latin-1)."""
    return "".join(c if 32 <= ord(c) < 127 else " " for c in text)


@dataclass
class FuzzRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def naming(self, compute_id: str, storage_id: str) -> FuzzRequest:
        """The same request about these entities instead of COMPUTE_ID and STORAGE_ID."""
        def swap(text: str) -> str:
            return text.replace(COMPUTE_ID, compute_id).replace(STORAGE_ID, storage_id)
        return FuzzRequest(self.method, swap(self.path), self.headers, swap(self.body.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape"))


@st.composite
def mutated(draw: st.DrawFn) -> str:
    body = draw(st.sampled_from(VALID_BODIES))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["delete", "insert", "duplicate", "truncate", "replace"]))
        if not body:
            break
        i = draw(st.integers(0, len(body) - 1))
        if op == "delete":
            body = body[:i] + body[i + 1:]
        elif op == "insert":
            body = body[:i] + draw(st.sampled_from(['"', ";", ",", "=", "<", ">", "\\", "\n", "{", "}", "#", "0", "-1", "1e999", "é", "\x00"])) + body[i:]
        elif op == "duplicate":
            body = body + body[i:]
        elif op == "truncate":
            body = body[:i]
        else:
            j = draw(st.integers(i, min(len(body), i + 20)))
            body = body[:i] + draw(st.text(max_size=20)) + body[j:]
    return body


@st.composite
def requests(draw: st.DrawFn, paths: list[str] = PATHS, auth: dict[str, str] | None = None) -> FuzzRequest:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "POST"]))
    # A path starting "//" would be a network-path reference to the client ("//0" names host
    # 0), never a request to the server under test: keep one leading slash.
    path = draw(st.one_of(st.sampled_from(paths), st.builds(lambda s: "/" + s.lstrip("/"),
                                                            HEADER_TEXT.filter(lambda s: "?" not in s and "#" not in s))))
    headers = dict(auth or {})
    content_type = draw(st.sampled_from(CONTENT_TYPES))
    if content_type:
        headers["Content-Type"] = content_type
    accept = draw(st.sampled_from(ACCEPTS))
    if accept:
        headers["Accept"] = accept
    if draw(st.booleans()):
        headers[draw(st.sampled_from(["Category", "X-OCCI-Attribute", "Link", "X-OCCI-Location"]))] = draw(
            st.one_of(HEADER_TEXT, mutated().map(lambda b: _header_safe(b.split("\r\n")[0].partition(": ")[2]))))
    body = draw(st.one_of(mutated(), st.text(max_size=300), st.just("")))
    return FuzzRequest(method, path, headers, body.encode("utf-8", "surrogatepass") if method != "GET" or draw(st.booleans()) else b"")
