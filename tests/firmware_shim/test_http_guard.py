"""http_guard on a real Starlette app (driven by httpx through Starlette's TestClient)."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from firmware_shim import Shim, Verdict
from firmware_shim.integrations.http_guard import CommandBlocked, http_guard
from firmware_shim.testing import FakeAgent


def judge(c: dict[str, Any]) -> tuple[str, list[str]]:
    return ("block", ["door-while-moving"]) if c["args"].get("door") == "rear" else ("allow", [])


def test_records_every_call_and_blocks_a_refused_command(agent_address: str) -> None:
    ran: list[str] = []
    with FakeAgent(agent_address, judge=judge) as fake:
        shim = Shim(agent=agent_address)

        @http_guard(shim)
        async def status(request: Request) -> JSONResponse:
            return JSONResponse({"ok": True})

        @http_guard(shim, command="tcu.door_unlock", args=lambda rq: dict(rq.path_params))
        async def unlock(request: Request) -> JSONResponse:
            ran.append(request.path_params["door"])
            return JSONResponse({"unlocked": True})

        app = Starlette(routes=[Route("/v1/status", status), Route("/v1/doors/{door}/unlock", unlock, methods=["POST"])])
        with TestClient(app) as client:
            assert client.get("/v1/status").status_code == 200
            assert client.post("/v1/doors/front/unlock").json() == {"unlocked": True}
            refused = client.post("/v1/doors/rear/unlock")
        assert refused.status_code == 403 and refused.json()["rules"] == ["door-while-moving"]
        assert ran == ["front"]
        assert shim.flush(2000) and fake.wait_for(lambda: len(fake.records()) == 3)
        got = [(r["api"], r["st"], r["x"].get("blocked") if "x" in r else None) for r in fake.records()]
        assert got == [
            ("rest.GET /v1/status", 200, None),
            ("rest.POST /v1/doors/front/unlock", 200, False),
            ("rest.POST /v1/doors/rear/unlock", 403, True),
        ]
        assert fake.records()[0]["src"]["id"] == "local-api" and fake.records()[0]["rs"] == len(b'{"ok":true}')
        shim.close()


def test_sync_handler_without_starlette_response_raises_blocked(agent_address: str) -> None:
    class FakeRequest:
        method = "POST"
        path = "/horn"
        client = None

    def deny(verdict: Verdict) -> Any:
        raise CommandBlocked(verdict)

    shim = Shim(agent=agent_address, fail_policy={"tcu.horn": "closed"})

    @http_guard(shim, command="tcu.horn", deny=deny)
    def horn(request: Any) -> str:
        raise AssertionError("handler must not run when blocked")

    with pytest.raises(CommandBlocked) as info:  # no agent: fail-closed class
        horn(FakeRequest())
    assert info.value.verdict.reason == "no_agent"
    queued = shim.stats()["queued_frames"]  # the fallback record and the blocked call's record
    assert queued == 2
