"""firmware_shim: the only code a device maker writes against.

    import firmware_shim as vt
    vt.configure(agent="unix:/run/veritrail/agent.sock", redact_fields=("id_tag", "id_token"),
                 redact_key=KEY, fail_policy={"ocpp.UnlockConnector": "closed"})
    vt.record("rest.GET /v1/status", src={"id": "app", "net": "10.0.0.7"}, st=200, lat=840)
    if vt.check("ocpp.UnlockConnector", {"connector_id": 1}, src="csms")  # args snake_case, as the rules read them:
        unlock()
    vt.update({"tx.active": True, "vehicle.speed": 0.0})

The module-level functions use one default `Shim` (made by `configure()`, or lazily with
default settings on first use). Runs unchanged on CPython and MicroPython; on CPython
`configure()` starts a background thread that reconnects and drains the ring, on
MicroPython call `poll()` from the main loop. Integrations for CPython frameworks live in
`firmware_shim.integrations` and are not imported here.
"""

from firmware_shim.config import SHIM_VERSION, ShimConfig
from firmware_shim.shim import PROTOCOL_VERSION, Shim
from firmware_shim.verdict import FailPolicy, Verdict

__all__ = [
    "Shim",
    "ShimConfig",
    "Verdict",
    "FailPolicy",
    "configure",
    "default_shim",
    "record",
    "check",
    "update",
    "poll",
    "PROTOCOL_VERSION",
    "SHIM_VERSION",
]

_default = None


def configure(background=None, **settings):
    """(Re)create the default Shim from ShimConfig settings; returns it.

    `background`: start the drain thread (default: True where threads exist)."""
    global _default
    old = _default
    _default = None
    if old is not None:
        old.close()
    shim = Shim(**settings)
    if background is None:
        background = _have_threads()
    if background:
        shim.start()
    _default = shim
    return shim


def default_shim():
    if _default is None:
        return configure()
    return _default


def record(api, **fields):
    default_shim().record(api, **fields)


def check(command, args=None, src=None, sub=None, deadline_ms=None):
    return default_shim().check(command, args, src, sub, deadline_ms)


def update(_state=None, **state):
    default_shim().update(_state, **state)


def poll(timeout_ms=0):
    default_shim().poll(timeout_ms)


def _have_threads():
    try:
        import threading  # type: ignore[import-not-found, unused-ignore]  # noqa: F401
    except ImportError:
        return False
    return True
