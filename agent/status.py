"""`veritrail agent status`: ask the running daemon over its socket, else read the spool.

The daemon answers a local-only ``{"t": "status"}`` frame on its Unix socket with its live
view (counters, uplink, connections). When it is not running, the spool is opened
read-only (SQLite ``mode=ro``) for what is persisted: seq, boot, blocks, unacknowledged
range, counters (persisted with every commit), last receipt.
"""

from __future__ import annotations

import socket
from typing import Any

from .ingest import FrameReader as FrameDecoder, encode_frame

from .config import AgentConfig
from .errors import AgentError, StatusUnavailable
from .spool import Spool


def from_socket(config: AgentConfig, timeout_s: float = 3.0) -> dict[str, Any]:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect(str(config.socket_path))
            sock.sendall(encode_frame({"t": "status", "id": 1}))
            decoder = FrameDecoder(16 * 1024 * 1024)
            while True:
                data = sock.recv(65536)
                if not data:
                    raise StatusUnavailable("daemon closed the connection")
                for item in decoder.feed(data):
                    if isinstance(item, dict) and item.get("t") == "status":
                        return dict(item["s"], daemon="running")
                    if isinstance(item, dict) and item.get("t") == "err":
                        raise StatusUnavailable(f"daemon answered {item.get('code')}")
    except OSError as exc:
        raise StatusUnavailable(f"socket {config.socket_path}: {type(exc).__name__}") from None


def from_spool(config: AgentConfig) -> dict[str, Any]:
    spool = Spool(config.spool_path, max_bytes=config.spool.max_bytes, readonly=True)
    try:
        state, problems = spool.load_state()
        counters = spool.counters()
        return {"device_id": config.device_id, "daemon": "not running",
                "seq": state.next_seq if state else None, "boot": state.boot if state else None,
                "next_cp": state.next_cp if state else None, "state_problems": problems,
                "spool": spool.stats(), "counters": counters, "uplink": {"state": "not running"}}
    finally:
        spool.close()


def gather(config: AgentConfig) -> dict[str, Any]:
    try:
        return from_socket(config)
    except StatusUnavailable as first:
        if not config.spool_path.exists():
            raise StatusUnavailable(f"the agent has not run yet (no spool at {config.spool_path}); "
                                    f"start it with: veritrail agent run --config {config.source}") from None
        try:
            return from_spool(config)
        except AgentError as second:
            raise StatusUnavailable(f"{first.reason}; {second}") from None


def _by_prefix(counters: dict[str, int], prefix: str) -> dict[str, int]:
    return {k[len(prefix):]: v for k, v in sorted(counters.items()) if k.startswith(prefix) and v}


def render(doc: dict[str, Any]) -> str:
    sp = doc.get("spool") or {}
    c = doc.get("counters") or {}
    un = sp.get("unacked")
    lines = [
        f"device     {doc.get('device_id')}   daemon: {doc.get('daemon')}"
        + (f" (pid {doc['pid']}, up {doc['uptime_s']} s)" if "pid" in doc else ""),
        f"seq        next {doc.get('seq')}   boot {doc.get('boot')}   next checkpoint {doc.get('next_cp')}",
        f"spool      {sp.get('bytes', 0):,} of {sp.get('max_bytes', 0):,} bytes (file {sp.get('file_bytes', 0):,}),"
        f" {sp.get('blocks', 0)} checkpoints, {sp.get('records', 0)} records"
        + (f" (+{sp['journal_records']} answered, sealing)" if sp.get("journal_records") else "")
        + ("   FULL: api records dropped" if doc.get("spool_full") else ""),
        "unacked    " + (f"seq {un['first_seq']}..{un['last_seq']} (cp {un['first_cp']}..{un['last_cp']})"
                         if un else "nothing"),
        "receipt    " + (f"cp {sp['last_receipt']['cp']} upto seq {sp['last_receipt']['upto_seq']}"
                         if sp.get("last_receipt") else "none yet"),
        f"drops      {_by_prefix(c, 'drop.') or 'none'}",
        f"evictions  {_by_prefix(c, 'evicted.') or 'none'}",
        f"damaged    {sp.get('damaged_blocks') or 'none'}"
        + (f"   (spool check failed {c['spool.quick_check_failed']}x)" if c.get("spool.quick_check_failed") else ""),
        f"frames     {_by_prefix(c, 'frames.') or 'all fine'}",
        f"uplink     {doc.get('uplink')}",
    ]
    if doc.get("crypto"):
        cr = doc["crypto"]
        lines.append(f"signing    {cr.get('alg')} via {cr.get('ed25519')}"
                     + (f" (libcrypto unavailable: {cr['fallback_reason']})" if cr.get("fallback_reason") else ""))
    if doc.get("state_problems"):
        lines.append(f"state      {doc['state_problems']}")
    return "\n".join(lines)
