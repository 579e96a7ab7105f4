"""Files the engine keeps: its memory (msgpack, written atomically) and the installed bundle.

Both are written to a temporary file in the same directory, fsynced, then renamed over the
old one, so a crash leaves either the old or the new file, never half of one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack

from agent.fsutil import write_atomic

from .errors import StateError

MAX_STATE_BYTES = 64 * 1024 * 1024
BUNDLE_FILE = "bundle.cose"


def save_state(path: Path, state: dict[str, Any]) -> None:
    try:
        write_atomic(path, msgpack.packb(state, use_bin_type=True))
    except OSError as exc:
        raise StateError(f"cannot write state: {type(exc).__name__}") from None


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
