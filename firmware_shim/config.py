"""Shim settings.

Portable core: runs unchanged on CPython and MicroPython.
"""

from firmware_shim.redact import Redactor
from firmware_shim.verdict import FailPolicy

__all__ = ["ShimConfig", "SHIM_VERSION"]

SHIM_VERSION = "veritrail-shim/0.1"


def _positive_int(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError("%s must be a positive int, got %r" % (name, value))
    return value


class ShimConfig:
    """Shim settings, validated at construction (keyword-only; treat as read-only).

    A plain class rather than a frozen dataclass because MicroPython has no dataclasses.
    """

    def __init__(
        self,
        *,
        agent="unix:/run/veritrail/agent.sock",
        ring_frames=256,
        ring_bytes=65536,
        max_frame_bytes=65536,
        batch_records=64,
        batch_bytes=16384,
        twin_keys=256,
        check_deadline_ms=500,
        record_budget_ms=2,
        connect_timeout_ms=200,
        backoff_min_ms=50,
        backoff_max_ms=5000,
        pump_interval_ms=20,
        fail_policy=None,
        fail_default="open",
        redact_fields=(),
        redact_key=None,
        sw=SHIM_VERSION
    ):
        self.agent = agent
        self.ring_frames = _positive_int("ring_frames", ring_frames)
        self.ring_bytes = _positive_int("ring_bytes", ring_bytes)
        self.max_frame_bytes = _positive_int("max_frame_bytes", max_frame_bytes)
        # Records queued together go as one `recb` frame of up to batch_records records and
        # about batch_bytes (1: always single `rec` frames, for agents older than `recb`).
        self.batch_records = _positive_int("batch_records", batch_records)
        self.batch_bytes = _positive_int("batch_bytes", batch_bytes)
        self.twin_keys = _positive_int("twin_keys", twin_keys)
        self.check_deadline_ms = _positive_int("check_deadline_ms", check_deadline_ms)
        self.record_budget_ms = _positive_int("record_budget_ms", record_budget_ms)
        self.connect_timeout_ms = _positive_int("connect_timeout_ms", connect_timeout_ms)
        self.backoff_min_ms = _positive_int("backoff_min_ms", backoff_min_ms)
        self.backoff_max_ms = _positive_int("backoff_max_ms", backoff_max_ms)
        self.pump_interval_ms = _positive_int("pump_interval_ms", pump_interval_ms)
        if backoff_max_ms < backoff_min_ms:
            raise ValueError("backoff_max_ms (%d) must be >= backoff_min_ms (%d)" % (backoff_max_ms, backoff_min_ms))
        self.fail_policy = FailPolicy(fail_policy, fail_default)
        self.redactor = Redactor(redact_fields, redact_key)
        if not isinstance(sw, str):
            raise ValueError("sw must be a str, got %r" % (sw,))
        self.sw = sw
