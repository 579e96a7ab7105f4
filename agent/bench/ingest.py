"""`veritrail bench ingest [--quick]`: records/s from a client over the Unix socket into the
sealed, durable spool of a real daemon (separate process), against the chain floor.

The run is cut into segments (5 with --quick, 10 in full), and each segment measures three
things back to back, so that the noise of a shared machine hits the daemon and its floor
alike: the floor, then N/segments records in ``recb`` frames, then as many in ``rec`` frames.

- ``records_per_s`` (``frame`` = "recb"): records sent as the shim sends records queued
  under load: ``recb`` frames of ``batch_records`` records, each record packed on its own.
  Each segment ends with one ``sync`` record whose ``ok`` means everything before it is
  sealed and fsynced (journaled); timed from the first byte sent to that ``ok``. Frames are
  encoded before the clock starts (the firmware's cost is not the agent's).
- ``records_per_s_rec_frames``: the same records again, one ``rec`` frame each.
- ``floor_records_per_s``: bare ``msgpack.packb`` + one SHA-256 per record over the same
  20,000 records, best of 3, measured in every segment (the median is reported).
- ``ratio_to_floor``: the median over segments of (segment rate / that segment's floor);
  ``ratio_to_floor_segments`` lists them all, ``ratio_to_floor_aggregate`` is
  ``records_per_s`` / ``floor_records_per_s``.
- ``peak_rss_mib``: the daemon's VmHWM once N records (1,000,000; 100,000 with --quick)
  sit in its spool (after half the segments); ``peak_rss_mib_end`` after all 2·N.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack

from firmware_shim.framing import encode_recb

from ..ingest import FrameReader as FrameDecoder, encode_frame
from . import stop_daemon

GOAL_RATIO = 0.25
GOAL_RSS_MIB = 40.0
BATCH_RECORDS = 64  # = firmware_shim ShimConfig.batch_records default


def _records(n: int) -> list[dict[str, Any]]:
    apis = ("ocpp.MeterValues", "ocpp.StatusNotification", "ocpp.Heartbeat", "rest.GET /v1/status",
            "tcu.telemetry", "ocpp.Authorize")
    return [{"api": apis[i % 6], "src": {"id": "csms-1", "net": "10.0.0.7", "auth": "tls"},
             "sub": f"conn-{i % 4}", "st": 200 if i % 50 else 500, "lat": 800 + (i * 37) % 5000,
             "rq": 120 + i % 300, "rs": 64 + i % 90, "x": {"n": i}} for i in range(n)]


def _floor(records: list[dict[str, Any]]) -> float:
    packb, sha = msgpack.packb, hashlib.sha256
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        for r in records:
            sha(packb(r)).digest()
        best = max(best, len(records) / (time.perf_counter() - t0))
    return best


def _frames(records: list[dict[str, Any]], per_chunk: int = 2048) -> list[bytes]:
    """``rec`` frames, one per record (the shim sends a lone record so)."""
    packb, pack_len = msgpack.packb, struct.Struct(">I").pack
    chunks = []
    for i in range(0, len(records), per_chunk):
        parts = []
        for r in records[i:i + per_chunk]:
            body = packb({"r": r, "t": "rec"})
            parts.append(pack_len(len(body)))
            parts.append(body)
        chunks.append(b"".join(parts))
    return chunks


def _batch_frames(records: list[dict[str, Any]], per_frame: int = BATCH_RECORDS,
                  frames_per_chunk: int = 32) -> list[bytes]:
    """``recb`` frames as the shim sends records queued together: each record packed on its
    own, ``per_frame`` records per frame (the shim's ``batch_records``; its ``batch_bytes``
    bound is not reached by these records)."""
    packb = msgpack.packb
    frames = [encode_recb([packb(r) for r in records[i:i + per_frame]]) for i in range(0, len(records), per_frame)]
    return [b"".join(frames[i:i + frames_per_chunk]) for i in range(0, len(frames), frames_per_chunk)]


def _connect(path: Path, proc: subprocess.Popen, deadline_s: float = 30.0) -> socket.socket:
    end = time.monotonic() + deadline_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {proc.returncode} before listening")
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(path))
            return sock
        except OSError:
            sock.close()
            if time.monotonic() > end:
                raise RuntimeError("daemon socket did not appear") from None
            time.sleep(0.05)


def _call(sock: socket.socket, obj: dict, want: str) -> dict:
    sock.sendall(encode_frame(obj))
    decoder = FrameDecoder(16 * 1024 * 1024)
    while True:
        data = sock.recv(65536)
        if not data:
            raise RuntimeError("daemon closed the connection")
        for item in decoder.feed(data):
            if isinstance(item, dict) and item.get("t") == want:
                return item
            raise RuntimeError(f"unexpected reply {item!r}")


def _vm(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{key} not in /proc/{pid}/status")


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def run(quick: bool, progress: Callable[[str], None]) -> dict[str, Any]:
    from ..daemon_cli import init_agent
    n = 100_000 if quick else 1_000_000
    segments = 5 if quick else 10
    per = n // segments
    progress(f"bench ingest: {n} records in {segments} segments (floor, recb frames, rec frames in each)")
    records = _records(n)
    sample = records[:20_000]
    recb_chunks = [_batch_frames(records[i * per:(i + 1) * per]) for i in range(segments)]
    rec_chunks = [_frames(records[i * per:(i + 1) * per]) for i in range(segments)]
    del records
    with tempfile.TemporaryDirectory(prefix="vt-bench-ingest-") as tmp:
        paths = init_agent(device_id="bench-dev", directory=tmp, quiet=True)
        text = paths.config.read_text().replace("max_bytes = 67108864", "max_bytes = 4294967296")
        paths.config.write_text(text)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "agent", "run", "--config", str(paths.config),
                                 "--log-level", "WARNING"], env=env, stdin=subprocess.DEVNULL)
        try:
            sock = _connect(paths.state_dir / "agent.sock", proc)
            rss_idle = _vm(proc.pid, "VmRSS")
            progress(f"  daemon pid {proc.pid} up, RSS {rss_idle:.1f} MiB; sending")
            took = {"recb": 0.0, "rec": 0.0}
            floors: list[float] = []
            ratios: list[float] = []
            ratios_rec: list[float] = []
            sync_id = 0
            for seg in range(segments):
                floor = _floor(sample)
                floors.append(floor)
                seconds = {}
                for frame, chunks in (("recb", recb_chunks[seg]), ("rec", rec_chunks[seg])):
                    sync_id += 1
                    t0 = time.perf_counter()
                    for chunk in chunks:
                        sock.sendall(chunk)
                    reply = _call(sock, {"t": "rec", "r": {"api": "bench.end"}, "sync": True, "id": sync_id}, "ok")
                    seconds[frame] = time.perf_counter() - t0
                    took[frame] += seconds[frame]
                ratios.append((per + 1) / seconds["recb"] / floor)
                ratios_rec.append((per + 1) / seconds["rec"] / floor)
                progress(f"  segment {seg + 1}/{segments}: floor {floor:,.0f}/s, recb {(per + 1) / seconds['recb']:,.0f}/s "
                         f"(ratio {ratios[-1]:.3f}), rec {(per + 1) / seconds['rec']:,.0f}/s (ratio {ratios_rec[-1]:.3f})")
                if seg == segments // 2 - 1:  # N records (and syncs) in the spool: the RSS figure
                    peak = _vm(proc.pid, "VmHWM")
            sent = segments * (per + 1)
            rate, rate_rec = sent / took["recb"], sent / took["rec"]
            floor_median = _median(floors)
            progress(f"  recb frames: {rate:,.0f} records/s; rec frames: {rate_rec:,.0f} records/s; "
                     f"floor median {floor_median:,.0f}/s (last seq {reply['seq']})")
            status = _call(sock, {"t": "status", "id": 99}, "status")["s"]
            in_spool = status["spool"]["records"] + status["spool"].get("journal_records", 0)
            peak_end = _vm(proc.pid, "VmHWM")
            progress(f"  peak RSS {peak:.1f} MiB with {n} records in the spool; {peak_end:.1f} MiB with "
                     f"{in_spool} records, {status['spool']['bytes']:,} bytes")
            sock.close()
        finally:
            stop_daemon(proc)
    return {
        "records": n, "segments": segments, "frame": "recb", "batch_records": BATCH_RECORDS,
        "records_per_s": round(rate), "floor_records_per_s": round(floor_median),
        "ratio_to_floor": round(_median(ratios), 3), "goal_ratio": GOAL_RATIO,
        "ratio_to_floor_segments": [round(r, 3) for r in ratios],
        "ratio_to_floor_aggregate": round(rate / floor_median, 3),
        "floor_records_per_s_segments": [round(f) for f in floors],
        "records_per_s_rec_frames": round(rate_rec), "ratio_to_floor_rec_frames": round(_median(ratios_rec), 3),
        "peak_rss_mib": round(peak, 1), "goal_rss_mib": GOAL_RSS_MIB,
        "peak_rss_mib_end": round(peak_end, 1), "idle_rss_mib": round(rss_idle, 1),
        "records_in_spool": in_spool, "seconds": round(took["recb"], 2),
        "seconds_rec_frames": round(took["rec"], 2), "quick": quick,
    }
