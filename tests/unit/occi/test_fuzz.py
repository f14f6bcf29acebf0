"""Random and mutated OCCI requests never make the server answer 5xx (OCCI -> gateway core ->
the in-process control plane)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from aiohttp import web
from hypothesis import HealthCheck, given, settings

from services.testing.control_plane import control_plane
from tests.occi_fuzz import FuzzRequest, requests
from tests.occi_helpers import ALICE, category, occi_app, plain


def test_no_request_gets_a_5xx(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    plane_context = control_plane(tmp_path / "plane")
    plane = loop.run_until_complete(plane_context.__aenter__())
    runner = web.AppRunner(occi_app(tmp_path, plane))
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    session = loop.run_until_complete(_session())

    async def send(req: FuzzRequest) -> tuple[int, str, str]:
        async with session.request(req.method, base + req.path, headers=req.headers, data=req.body) as r:
            return r.status, await r.text(errors="replace"), r.headers.get("Location", "")

    # the compute and the storage that the mutated renderings name exist
    _, _, compute = loop.run_until_complete(send(FuzzRequest("POST", "/compute/", {**ALICE, "Content-Type": "text/plain"},
                                                             plain(category("compute")).encode())))
    _, _, storage = loop.run_until_complete(send(FuzzRequest("POST", "/storage/", {**ALICE, "Content-Type": "text/plain"},
                                                             plain(category("storage"), "X-OCCI-Attribute: occi.storage.size=1").encode())))
    compute_id, storage_id = compute.rsplit("/", 1)[-1], storage.rsplit("/", 1)[-1]
    assert compute_id and storage_id

    @settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(requests(auth=ALICE))
    def check(req: FuzzRequest) -> None:
        req = req.naming(compute_id, storage_id)
        status, text, _ = loop.run_until_complete(send(req))
        assert status < 500, f"{req}: {status} {text}"
        assert "Traceback" not in text

    try:
        check()
    finally:
        loop.run_until_complete(session.close())
        loop.run_until_complete(runner.cleanup())
        loop.run_until_complete(plane_context.__aexit__(None, None, None))
        loop.close()


async def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(skip_auto_headers=["Content-Type"])
