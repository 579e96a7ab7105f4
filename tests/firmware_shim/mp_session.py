# A shim session driven line by line, for MicroPython's Unix port (and CPython alike).
#   micropython mp_session.py REPO_ROOT   (stdin: one JSON command a line; stdout: one JSON reply a line)
# It imports the shim from REPO_ROOT/firmware_shim as it is: no copy, no MicroPython fork.
# No threads: the shim does its I/O in the caller's thread, and "poll" drives it like a
# device's main loop does.
import json
import sys

sys.path.insert(0, sys.argv[1])

from firmware_shim import Shim  # noqa: E402
from firmware_shim import compat  # noqa: E402

shim = None


def verdict_doc(v):
    return {"action": v.action, "source": v.source, "reason": v.reason, "rules": v.rules, "seq": v.seq,
            "allowed": bool(v)}


def handle(cmd):
    global shim
    op = cmd["op"]
    if op == "open":
        shim = Shim(agent=cmd["agent"], **cmd.get("settings", {}))
        return {"impl": sys.implementation.name}
    if op == "record":
        for i in range(cmd["first"], cmd["last"] + 1):
            shim.record(cmd["api"], src="fw", st=200, i=i)
        return shim.stats()
    if op == "update":
        shim.update(cmd["state"])
        return shim.stats()
    if op == "check":
        return verdict_doc(shim.check(cmd["command"], cmd.get("args"), src="csms", deadline_ms=cmd.get("deadline_ms")))
    if op == "drain":  # a main loop: poll until everything queued went out (or the time is up)
        deadline = compat.ticks_ms() + cmd["timeout_ms"]
        ok = shim.flush(0)
        while not ok and compat.ticks_diff(deadline, compat.ticks_ms()) > 0:
            shim.poll(20)
            ok = shim.flush(0)
        return {"drained": ok, "stats": shim.stats()}
    if op == "stats":
        return shim.stats()
    if op == "close":
        shim.close()
        return {}
    raise ValueError("unknown op " + op)


while True:
    line = sys.stdin.readline()
    if not line:
        break
    try:
        reply = {"ok": handle(json.loads(line))}
    except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
        reply = {"error": repr(exc)}
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
