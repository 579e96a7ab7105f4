"""The transparency-log and evidence routes on a real uvicorn server, with a stand-in auth."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import uvicorn
from fastapi import FastAPI, Header, HTTPException

from cloud_collector.tlog.routes import router
from tests.mqtt_broker import free_port, wait_for

TOKEN = "test-viewer-token"


def require(role: str):
    """Stand-in for helper 12's auth dependency: one bearer token, role viewer."""
    def dep(authorization: str | None = Header(default=None)):
        if authorization != f"Bearer {TOKEN}":
            raise HTTPException(401, "missing or bad credentials")
        return SimpleNamespace(name="auditor", role="viewer")
    return dep


def make_app(store) -> FastAPI:
    app = FastAPI()
    app.state.store = store
    app.include_router(router(require))
    return app


class LogServer:
    def __init__(self, store) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(make_app(store), host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "LogServer":
        self.thread.start()
        wait_for(lambda: self.server.started, 20, "uvicorn started")
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
