"""Minimal read-only JSON API over HTTP (Starlette). The dashboard issue builds on it.

    GET /api/devices                       registry and chain state of every device
    GET /api/devices/{id}                  one device: keys, chain state, pending, bridges, last status
    GET /api/devices/{id}/records?from=&to=&limit=   stored records by seq range (decoded)
    GET /api/alerts?device=&limit=         newest first
    GET /api/metrics                       counters, incl. rejected.<reason>
"""

from __future__ import annotations

import base64
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agent.core.errors import RecordMalformed
from agent.core.record import decode

from .store import Store

MAX_LIMIT = 5000


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _int_param(request: Request, name: str, default: int, lo: int = 0, hi: int = 2**63 - 1) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in {lo}..{hi}")
    return value


def create_app(store_factory) -> Starlette:
    """``store_factory()`` returns a Store; one is opened lazily and reused."""
    holder: dict[str, Store] = {}

    def store() -> Store:
        if "s" not in holder:
            holder["s"] = store_factory()
        return holder["s"]

    async def devices(request: Request) -> JSONResponse:
        return JSONResponse({"devices": store().devices()})

    async def device(request: Request) -> JSONResponse:
        d = store().device(request.path_params["dev"])
        if d is None:
            return JSONResponse({"error": "unknown device"}, status_code=404)
        return JSONResponse(d)

    async def records(request: Request) -> JSONResponse:
        dev = request.path_params["dev"]
        if store().device(dev) is None:
            return JSONResponse({"error": "unknown device"}, status_code=404)
        try:
            first = _int_param(request, "from", 0)
            last = _int_param(request, "to", 2**63 - 1)
            limit = _int_param(request, "limit", 1000, 1, MAX_LIMIT)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        out = []
        for seq, cp, data in store().records(dev, first, last, limit):
            try:
                rec = _jsonable(decode(data))
            except RecordMalformed:
                rec = None
            out.append({"seq": seq, "cp": cp, "record": rec, "bytes": base64.b64encode(data).decode()})
        return JSONResponse({"device": dev, "records": out})

    async def alerts(request: Request) -> JSONResponse:
        try:
            limit = _int_param(request, "limit", 200, 1, MAX_LIMIT)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"alerts": store().alerts(request.query_params.get("device"), limit)})

    async def metrics(request: Request) -> JSONResponse:
        counters = store().counters()
        rejected = {k.removeprefix("rejected."): v for k, v in counters.items() if k.startswith("rejected.")}
        return JSONResponse({"counters": counters, "rejected": rejected, "rejected_total": sum(rejected.values())})

    return Starlette(routes=[
        Route("/api/devices", devices), Route("/api/devices/{dev}", device),
        Route("/api/devices/{dev}/records", records), Route("/api/alerts", alerts), Route("/api/metrics", metrics),
    ])
