"""The few things CPython and MicroPython spell differently: clock, lock, sleep, HMAC.

Portable core: no typing at run time, no dataclasses.
"""

import hashlib
import sys

import time

IS_MICROPYTHON = sys.implementation.name == "micropython"

if hasattr(time, "ticks_ms"):  # MicroPython: wrapping millisecond ticks

    def ticks_ms():
        return time.ticks_ms()  # type: ignore[attr-defined, unused-ignore]

    def ticks_diff(later, earlier):
        return time.ticks_diff(later, earlier)  # type: ignore[attr-defined, unused-ignore]

    def sleep_ms(ms):
        time.sleep_ms(ms)  # type: ignore[attr-defined, unused-ignore]

else:

    def ticks_ms():
        return time.monotonic_ns() // 1000000  # type: ignore[attr-defined, unused-ignore]

    def ticks_diff(later, earlier):
        return later - earlier

    def sleep_ms(ms):
        time.sleep(ms / 1000)


def ticks_us():
    if hasattr(time, "ticks_us"):
        return time.ticks_us()  # type: ignore[attr-defined, unused-ignore]
    return time.monotonic_ns() // 1000  # type: ignore[attr-defined, unused-ignore]


class _NoLock:
    """Stand-in where threads do not exist: acquire always succeeds at once."""

    def acquire(self, blocking=True, timeout=-1):
        return True

    def release(self):
        pass


def make_lock():
    try:
        import threading  # type: ignore[import-not-found, unused-ignore]

        return threading.Lock()
    except ImportError:
        pass
    try:
        import _thread

        return _thread.allocate_lock()
    except (ImportError, AttributeError):
        return _NoLock()


def acquire(lock, timeout_ms):
    """Acquire `lock` waiting at most `timeout_ms` (0: do not wait). Returns bool."""
    if timeout_ms <= 0:
        return lock.acquire(False)
    try:
        return lock.acquire(True, timeout_ms / 1000)
    except (TypeError, ValueError):
        # MicroPython's _thread lock has no timeout: poll it.
        deadline = ticks_ms() + timeout_ms
        while True:
            if lock.acquire(False):
                return True
            if ticks_diff(deadline, ticks_ms()) <= 0:
                return False
            sleep_ms(1)


_BLOCK = 64  # SHA-256 block size
_IPAD = bytes(0x36 for _ in range(_BLOCK))
_OPAD = bytes(0x5C for _ in range(_BLOCK))


def _xor(a, b):
    return bytes(x ^ y for x, y in zip(a, b))


def hmac_sha256_portable(key, msg):
    """RFC 2104 HMAC-SHA256 from hashlib.sha256 alone (MicroPython has no hmac module)."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = bytes(key) + bytes(_BLOCK - len(key))
    inner = hashlib.sha256(_xor(key, _IPAD))
    inner.update(msg)
    outer = hashlib.sha256(_xor(key, _OPAD))
    outer.update(inner.digest())
    return outer.digest()


try:
    import hmac as _hmac  # type: ignore[import-not-found, unused-ignore]

    def hmac_sha256(key, msg):
        return _hmac.new(key, msg, "sha256").digest()

except ImportError:
    hmac_sha256 = hmac_sha256_portable
