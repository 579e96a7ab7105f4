"""HTTP routes of the transparency log and of evidence bundles (a router factory, see CONTRACT).

    GET  /log/checkpoint                       the latest signed checkpoint (+ witness cosignatures)
    GET  /log/tile/{L}/{N}[.p/{W}]             a hash tile (c2sp.org/tlog-tiles)
    GET  /log/tile/entries/{N}[.p/{W}]         an entry bundle
    GET  /api/alerts/{id}/evidence             the alert's evidence bundle (docs/evidence.md)
    POST /api/alerts/{id}/evidence/verify      every check of that bundle, with the registry's trust

All take the ``viewer`` role: log entries name device ids. An operator who wants standard
tlog clients to follow the log anonymously mounts this router with a ``require`` that lets
the /log routes through. Handlers are plain ``def``: FastAPI runs them in its thread pool.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from agent.core import evidence as fmt
from agent.core import tlog
from agent.core.errors import LogFormatError

from ..errors import StoreError
from ..evidence import EvidenceUnavailable, alert_refs, build, verify_again

IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable"}


class StepModel(BaseModel):
    name: str
    ok: bool
    detail: str


class VerifyModel(BaseModel):
    ok: bool
    steps: list[StepModel]
    proves: list[str]
    does_not_prove: list[str]


def _error(status: int, error: str, reason: str) -> JSONResponse:
    return JSONResponse({"error": error, "reason": reason}, status_code=status)


def _tile(store: Any, path: str) -> Response:
    try:
        ref = tlog.parse_tile_path(path)
    except LogFormatError as exc:
        return _error(400, "bad_tile_path", exc.reason)
    if ref.level is None:
        rows = store.tlog_leaves(ref.index * tlog.TILE_WIDTH, ref.width)
        if len(rows) != ref.width:
            return _error(404, "not_found", "no such entry bundle (yet)")
        data = tlog.encode_bundle([tlog.encode_entry(*r) for r in rows])
    else:
        stored = store.tlog_tile(ref.level, ref.index)
        if stored is None or len(stored) < ref.width * tlog.HASH_BYTES:
            return _error(404, "not_found", "no such tile (yet)")
        data = stored[:ref.width * tlog.HASH_BYTES]
    return Response(data, media_type="application/octet-stream", headers=IMMUTABLE)


def router(require: Callable[[str], Any]) -> APIRouter:
    r = APIRouter(tags=["transparency log and evidence"])
    viewer = Depends(require("viewer"))

    @r.get("/log/checkpoint", response_class=Response,
           responses={200: {"content": {"text/plain": {}}, "description": "signed note (c2sp.org/tlog-checkpoint)"}})
    def log_checkpoint(request: Request, principal: Any = viewer) -> Response:
        store = request.app.state.store
        head = store.tlog_head()
        if head is None:
            return _error(404, "not_found", "the log is empty")
        size, _, note = head
        text = note + "".join(line for _, line in store.tlog_cosigs(size))
        return Response(text, media_type="text/plain; charset=utf-8", headers={"Cache-Control": "max-age=2"})

    @r.get("/log/tile/entries/{n:path}", response_class=Response,
           responses={200: {"content": {"application/octet-stream": {}}, "description": "entry bundle"}})
    def log_entries(n: str, request: Request, principal: Any = viewer) -> Response:
        return _tile(request.app.state.store, f"entries/{n}")

    @r.get("/log/tile/{level}/{n:path}", response_class=Response,
           responses={200: {"content": {"application/octet-stream": {}}, "description": "hash tile"}})
    def log_tile(level: str, n: str, request: Request, principal: Any = viewer) -> Response:
        return _tile(request.app.state.store, f"{level}/{n}")

    def _bundle(store: Any, alert_id: int) -> bytes:
        return fmt.encode(build(store, alert_refs(store, alert_id)))

    @r.get("/api/alerts/{alert_id}/evidence", response_class=Response,
           responses={200: {"content": {"application/json": {}}, "description": "evidence bundle (docs/evidence.md)"}})
    def alert_evidence(alert_id: int, request: Request, principal: Any = viewer) -> Response:
        try:
            data = _bundle(request.app.state.store, alert_id)
        except EvidenceUnavailable as exc:
            return _error(exc.status, "evidence_unavailable", exc.reason)
        except StoreError as exc:
            return _error(503, "store_error", exc.reason)
        return Response(data, media_type="application/json",
                        headers={"Content-Disposition": f'attachment; filename="alert-{alert_id}-evidence.json"'})

    @r.post("/api/alerts/{alert_id}/evidence/verify", response_model=VerifyModel)
    def alert_evidence_verify(alert_id: int, request: Request, principal: Any = viewer) -> Any:
        store = request.app.state.store
        try:
            data = _bundle(store, alert_id)
        except EvidenceUnavailable as exc:
            return _error(exc.status, "evidence_unavailable", exc.reason)
        except StoreError as exc:
            return _error(503, "store_error", exc.reason)
        return verify_again(store, data).as_dict()

    return r
