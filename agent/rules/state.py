"""Files the engine keeps: its memory (msgpack, written atomically) and the installed bundle.

Both are written to a temporary file in the same directory, fsynced, then renamed over the
old one, so a crash leaves either the old or the new file, never half of one.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import msgpack

from agent.fsutil import write_atomic

from .errors import StateError

MAX_STATE_BYTES = 64 * 1024 * 1024
BUNDLE_FILE = "bundle.cose"


def pack_state(state: dict[str, Any]) -> bytes:
    return msgpack.packb(state, use_bin_type=True)


def save_state(path: Path, state: dict[str, Any] | bytes) -> None:
    data = state if isinstance(state, bytes) else pack_state(state)
    try:
        write_atomic(path, data)
    except OSError as exc:
        raise StateError(f"cannot write state: {type(exc).__name__}") from None


class StateWriter:
    """Writes state files off the caller's thread, so a judge() that triggers an autosave
    does not wait for two fsyncs (tens of ms on flash) on the daemon's event loop.

    One thread, one slot: a state submitted while another waits replaces it (only the newest
    state matters; each one is complete). ``flush()`` waits until what was submitted is on
    disk. Failures are counted by reason in ``failed`` and the next submit tries again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.failed: Counter[str] = Counter()
        self.written = 0
        self.superseded = 0
        self._cond = threading.Condition()
        self._slot: bytes | None = None
        self._busy = False
        self._thread: threading.Thread | None = None

    def submit(self, data: bytes) -> None:
        with self._cond:
            if self._slot is not None:
                self.superseded += 1
            self._slot = data
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="vt-rules-state", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def flush(self, timeout_s: float | None = 30.0) -> bool:
        """True once nothing is waiting or being written (False if ``timeout_s`` passed first)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._slot is None and not self._busy, timeout_s)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._slot is not None)
                data, self._slot, self._busy = self._slot, None, True
            if data is None:  # (wait_for guarantees a slot; this narrows the type)
                continue
            try:
                save_state(self.path, data)
                self.written += 1
            except StateError as exc:
                self.failed[exc.reason] += 1
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()


def load_state(path: Path) -> dict[str, Any] | None:
    """The saved state, None if there is none; StateError if it cannot be read."""
    try:
        if path.stat().st_size > MAX_STATE_BYTES:
            raise StateError("state file too large")
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"cannot read state: {type(exc).__name__}") from None
    try:
        state = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (msgpack.UnpackException, ValueError, TypeError) as exc:
        raise StateError(f"state undecodable: {type(exc).__name__}") from None
    if not isinstance(state, dict):
        raise StateError("state is not a map")
    return state


def read_bundle(bundle_dir: Path) -> bytes | None:
    try:
        return (bundle_dir / BUNDLE_FILE).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"cannot read bundle: {type(exc).__name__}") from None


def write_bundle(bundle_dir: Path, message: bytes) -> None:
    write_atomic(bundle_dir / BUNDLE_FILE, message)
