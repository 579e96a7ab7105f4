"""A decorator for HTTP handlers of a device's local API (Starlette/FastAPI style or any
handler whose first argument is a request with `.method`, `.url.path` and `.client`).

    @http_guard(shim)                                          # record only
    async def status(request): ...

    @http_guard(shim, command="tcu.door_unlock", args=lambda rq: dict(rq.path_params))
    async def unlock(request): ...                             # judged before it runs

Every call is recorded as `rest.<METHOD> <path>` with the caller's address, status,
latency (µs) and response bytes. With `command`, `shim.check()` runs first (in a worker
thread for async handlers); a verdict that does not allow the call returns `deny(verdict)`
without running the handler: by default a 403 JSON response when Starlette is installed,
otherwise `CommandBlocked` is raised for the caller's framework to map.

CPython only.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Callable
from typing import Any

from firmware_shim.shim import Shim
from firmware_shim.verdict import Verdict

__all__ = ["http_guard", "CommandBlocked"]


class CommandBlocked(Exception):
    """The agent (or the fail policy) did not allow the command; carries the verdict."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(f"blocked by {verdict.source}: {verdict.action}")
        self.verdict = verdict


def _describe(request: Any) -> tuple[str, str, dict[str, Any]]:
    method = str(getattr(request, "method", "?"))
    url = getattr(request, "url", None)
    path = str(getattr(url, "path", None) or getattr(request, "path", "?"))
    src: dict[str, Any] = {"id": "local-api"}
    client = getattr(request, "client", None)
    host = getattr(client, "host", None)
    if host:
        src["net"] = f"{host}:{getattr(client, 'port', '')}".rstrip(":")
    return method, path, src


def _default_deny(verdict: Verdict) -> Any:
    try:
        from starlette.responses import JSONResponse
    except ImportError:
        raise CommandBlocked(verdict) from None
    return JSONResponse({"error": "blocked", "verdict": verdict.action, "rules": verdict.rules}, status_code=403)


def _outcome(response: Any) -> tuple[Any, int | None]:
    status = getattr(response, "status_code", None)
    body = getattr(response, "body", None)
    return (status if status is not None else "ok"), (len(body) if isinstance(body, (bytes, bytearray)) else None)


def http_guard(
    shim: Shim,
    *,
    api: str | None = None,
    command: str | None = None,
    args: Callable[[Any], dict[str, Any]] | None = None,
    deny: Callable[[Verdict], Any] = _default_deny,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(handler: Callable[..., Any]) -> Callable[..., Any]:
        def before(request: Any) -> tuple[str, dict[str, Any], int]:
            method, path, src = _describe(request)
            return api or f"rest.{method} {path}", src, time.perf_counter_ns()

        def after(name: str, src: dict[str, Any], t0: int, status: Any, rs: int | None, verdict: Verdict | None) -> None:
            extra: dict[str, Any] = {}
            if verdict is not None:
                extra = {"cmd": command, "v": verdict.action, "blocked": not verdict.allowed}
            shim.record(name, src=src, st=status, lat=(time.perf_counter_ns() - t0) // 1000, rs=rs, **extra)

        def refuse(name: str, src: dict[str, Any], t0: int, verdict: Verdict) -> Any:
            status: Any = "blocked"
            rs = None
            try:
                response = deny(verdict)
                status, rs = _outcome(response)
                return response
            finally:  # recorded even when deny() raises
                after(name, src, t0, status, rs, verdict)

        if inspect.iscoroutinefunction(handler):

            @functools.wraps(handler)
            async def guarded_async(request: Any, *a: Any, **kw: Any) -> Any:
                name, src, t0 = before(request)
                verdict = None
                if command is not None:
                    verdict = await asyncio.to_thread(shim.check, command, args(request) if args else {}, src)
                    if not verdict.allowed:
                        return refuse(name, src, t0, verdict)
                status: Any = "error"
                rs = None
                try:
                    response = await handler(request, *a, **kw)
                    status, rs = _outcome(response)
                    return response
                finally:
                    after(name, src, t0, status, rs, verdict)

            return guarded_async

        @functools.wraps(handler)
        def guarded(request: Any, *a: Any, **kw: Any) -> Any:
            name, src, t0 = before(request)
            verdict = None
            if command is not None:
                verdict = shim.check(command, args(request) if args else {}, src)
                if not verdict.allowed:
                    return refuse(name, src, t0, verdict)
            status: Any = "error"
            rs = None
            try:
                response = handler(request, *a, **kw)
                status, rs = _outcome(response)
                return response
            finally:
                after(name, src, t0, status, rs, verdict)

        return guarded

    return decorate
