"""The shim: `record()`, `check()`, `update()` towards the Veritrail agent.

Guarantees (DESIGN §8):
- `record()` never raises and spends at most `record_budget_ms` on I/O. Frames wait in a
  RAM ring (`ring_frames` / `ring_bytes`) while the agent is away and go out in order on
  reconnect. A full ring drops the *newest* record (the ring keeps a contiguous history
  from the moment the agent went away); every drop is counted by reason and reported to
  the agent with a `drop` frame placed exactly where the gap is.
- `check()` waits at most its deadline; with no verdict it applies the fail policy of the
  command's class (`fail_policy`, open = allow, closed = block) and records that it did.
- `update()` coalesces twin values: keys written while the agent is away or busy are sent
  once, with their latest value, in one `upd` frame (at most `twin_keys` pending keys).

I/O happens in the caller's thread, in short bounded steps, or in `start()`'s background
thread on CPython. On MicroPython without threads, call `poll()` from the main loop.

Portable core: runs unchanged on CPython and MicroPython.
"""

from firmware_shim import compat
from firmware_shim.config import SHIM_VERSION, ShimConfig
from firmware_shim.framing import FrameDecoder, FrameEncodeError, FrameError, encode_frame, encode_recb, rec_fields
from firmware_shim.ring import Entry, Ring
from firmware_shim.transport import SocketTransport, TransportError
from firmware_shim.verdict import Verdict

__all__ = ["Shim", "ShimConfig", "PROTOCOL_VERSION", "SHIM_VERSION"]

PROTOCOL_VERSION = 1

_REC_FIELDS = ("src", "sub", "st", "lat", "rq", "rs")
# Before the first send after this long without I/O, look for the agent's close (EOF) first
# (one poll): a TCP send into a connection the agent has closed succeeds locally and the frame
# is lost. Records in a burst (less than this apart) skip the poll.
_IDLE_PEEK_MS = 2


class Shim:
    def __init__(self, config=None, transport=None, **settings):
        if config is None:
            config = ShimConfig(**settings)
        elif settings:
            raise ValueError("pass either config or keyword settings, not both")
        self.config = config
        self._transport = transport if transport is not None else SocketTransport(config.agent)
        self._io_lock = compat.make_lock()
        self._ring = Ring(config.ring_frames, config.ring_bytes)
        self._twin_lock = compat.make_lock()
        self._twin = {}
        self._out = None
        self._out_pos = 0
        self._connected = False
        self._gen = 0
        self._decoder = None
        self._awaiting = {}
        self._replies = {}
        self._next_id = 1
        self._next_connect = compat.ticks_ms()
        self._attempt = 0
        self._since_read = 0
        self._io_at = compat.ticks_ms()
        self._pump = None
        self._wake = None
        self._stopping = False
        self.counters = {}

    # -- public API --------------------------------------------------------------------

    def record(self, api, src=None, sub=None, st=None, lat=None, rq=None, rs=None, kind=None, **extra):
        """Record one call. Never raises; bounded time."""
        self._record(api, src, sub, st, lat, rq, rs, kind, extra, False)

    def _record(self, api, src, sub, st, lat, rq, rs, kind, extra, priority):
        try:
            if not isinstance(api, str) or not api:
                self._drop("invalid", 1)
                return
            r = {"api": api}  # type: dict
            values = (src, sub, st, lat, rq, rs)
            for i in range(len(_REC_FIELDS)):
                if values[i] is not None:
                    r[_REC_FIELDS[i]] = values[i]
            if isinstance(src, str):
                r["src"] = {"id": src}
            if kind is not None:
                r["kind"] = kind
            if extra:
                r["x"] = extra
            r = self.config.redactor.apply(r)
            try:
                frame = encode_frame({"t": "rec", "r": r}, self.config.max_frame_bytes)
            except FrameEncodeError:
                self._drop("unencodable", 1)
                return
            self._count("records")
            self._ring.push(Entry(frame, "rec", None, priority))
            self._io_from_caller()
        except Exception:  # noqa: BLE001 - the promise is "never raises"; counted
            self._count("record_errors")

    def update(self, _state=None, **state):
        """Coalesced twin update, e.g. update({"vehicle.speed": 80.0}, door="closed")."""
        try:
            if _state:
                state.update(_state)
            if not compat.acquire(self._twin_lock, 50):
                self._drop("twin_busy", len(state))
                return
            try:
                for key in state:
                    if key not in self._twin and len(self._twin) >= self.config.twin_keys:
                        self._drop("twin_overflow", 1)
                        continue
                    self._twin[key] = state[key]
            finally:
                self._twin_lock.release()
            self._count("updates")
            self._io_from_caller()
        except Exception:  # noqa: BLE001 - never raises; counted
            self._count("update_errors")

    def check(self, command, args=None, src=None, sub=None, deadline_ms=None):
        """Ask the agent for a verdict; falls back to the fail policy. Returns a Verdict."""
        started = compat.ticks_ms()
        deadline = deadline_ms if deadline_ms is not None else self.config.check_deadline_ms
        self._count("checks")
        cid = None
        try:
            cid = self._next_id
            self._next_id += 1
            c = {"cmd": command, "args": args if args is not None else {}}
            c["src"] = {"id": src} if isinstance(src, str) else (src if src is not None else {})
            if sub is not None:
                c["sub"] = sub
            c = self.config.redactor.apply(c)
            try:
                frame = encode_frame({"t": "chk", "id": cid, "c": c, "dl": deadline}, self.config.max_frame_bytes)
            except FrameEncodeError:
                return self._fallback(command, "unencodable")
            entry = Entry(frame, "chk", cid)
            self._materialize_twin(True)
            self._awaiting[cid] = entry
            self._ring.push(entry)
            reply = None
            tried_connect = False
            while True:
                reply = self._replies.pop(cid, None)
                if reply is not None:
                    break
                remaining = deadline - compat.ticks_diff(compat.ticks_ms(), started)
                if remaining <= 0:
                    break
                if not compat.acquire(self._io_lock, remaining):
                    continue
                try:
                    if not self._connected:
                        if tried_connect:
                            break
                        tried_connect = True
                        self._connect(min(remaining, self.config.connect_timeout_ms))
                        if not self._connected:
                            break
                    self._io_step(remaining, remaining, cid)
                finally:
                    self._io_lock.release()
            if reply is None:
                reply = self._replies.pop(cid, None)
            self._forget(cid)  # before any fallback record can flush a stale check
            cid = None
            if reply is None:
                return self._fallback(command, "timeout" if self._connected else "no_agent")
            if reply.get("t") == "verdict":
                try:
                    return Verdict.from_reply(reply)
                except ValueError:
                    return self._fallback(command, "bad_verdict")
            return self._fallback(command, "agent_" + str(reply.get("code")))
        except Exception:  # noqa: BLE001 - check() answers with the fail policy, counted
            self._count("check_errors")
            return self._fallback(command, "shim_error")
        finally:
            if cid is not None:
                self._forget(cid)

    def poll(self, timeout_ms=0):
        """Connect if due, send what is queued, read replies. For main loops without threads."""
        if compat.acquire(self._io_lock, timeout_ms):
            try:
                if not self._connected:
                    self._connect_if_due(self.config.connect_timeout_ms)
                if self._connected:
                    self._io_step(max(timeout_ms, self.config.record_budget_ms), timeout_ms, None)
            finally:
                self._io_lock.release()

    def flush(self, timeout_ms):
        """Wait up to `timeout_ms` until everything queued has been handed to the transport."""
        started = compat.ticks_ms()
        while True:
            self._wake_pump()
            if self._pump is None:
                self.poll(min(10, timeout_ms))
            if not len(self._ring) and self._out is None and not self._twin and not self._ring.unreported():
                return True
            if compat.ticks_diff(compat.ticks_ms(), started) >= timeout_ms:
                return False
            if self._pump is not None:
                compat.sleep_ms(1)

    def stats(self):
        out = dict(self.counters)
        out["dropped"] = dict(self._ring.dropped)
        out["queued_frames"] = len(self._ring)
        out["queued_bytes"] = self._ring.bytes
        out["connected"] = self._connected
        return out

    def start(self):
        """CPython: start the background thread that reconnects and drains the ring."""
        import threading  # type: ignore[import-not-found, unused-ignore]

        if self._pump is not None:
            return
        self._wake = threading.Event()
        self._stopping = False
        self._pump = threading.Thread(target=self._pump_loop, name="veritrail-shim", daemon=True)
        self._pump.start()

    def close(self):
        pump = self._pump
        if pump is not None:
            self._stopping = True
            self._wake_pump()
            pump.join(2.0)
            self._pump = None
        if compat.acquire(self._io_lock, 1000):
            try:
                self._disconnect("closed")
            finally:
                self._io_lock.release()

    # -- queue -------------------------------------------------------------------------

    def _count(self, name, n=1):
        self.counters[name] = self.counters.get(name, 0) + n

    def _drop(self, reason, n):
        self._ring.drop(reason, n)

    def _materialize_twin(self, force):
        """Turn pending twin values into one `upd` frame. Unless `force` (a check needs the
        latest state ahead of it), a full ring leaves them pending to coalesce further."""
        if not self._twin:
            return
        if not force and self._ring.full():
            return
        compat.acquire(self._twin_lock, 1000)
        try:
            twin = self._twin
            self._twin = {}
        finally:
            self._twin_lock.release()
        try:
            frame = encode_frame({"t": "upd", "s": twin}, self.config.max_frame_bytes)
        except FrameEncodeError:
            self._drop("unencodable", len(twin))
            return
        self._ring.push(Entry(frame, "upd"))

    def _forget(self, cid):
        entry = self._awaiting.pop(cid, None)
        self._replies.pop(cid, None)
        if entry is not None and entry.state == "queued":
            self._ring.remove(entry)  # never sent: a stale check must not reach the agent

    # -- I/O (caller holds _io_lock) -----------------------------------------------------

    def _io_from_caller(self):
        if self._pump is not None and not self._connected:
            self._wake_pump()
            return
        if not compat.acquire(self._io_lock, 0):
            self._wake_pump()
            return
        try:
            if self._connected and compat.ticks_diff(compat.ticks_ms(), self._io_at) >= _IDLE_PEEK_MS:
                self._peek_closed()
            if not self._connected and self._pump is None:
                self._connect_if_due(min(self.config.connect_timeout_ms, self.config.record_budget_ms))
            if self._connected:
                self._since_read += 1
                read_ms = 0 if self._since_read >= 32 or self._awaiting else None
                self._io_step(self.config.record_budget_ms, read_ms, None, False)
        finally:
            self._io_lock.release()

    def _connect_if_due(self, timeout_ms):
        if compat.ticks_diff(compat.ticks_ms(), self._next_connect) >= 0:
            self._connect(timeout_ms)

    def _connect(self, timeout_ms):
        try:
            self._transport.connect(timeout_ms)
        except TransportError as exc:
            self._count("connect_failures")
            self._count("connect_failure_" + exc.reason)
            self._attempt += 1
            delay = min(self.config.backoff_max_ms, self.config.backoff_min_ms * (1 << min(self._attempt, 16)))
            self._next_connect = compat.ticks_ms() + delay // 2 + _jitter(delay // 2)
            return
        self._attempt = 0
        self._connected = True
        self._gen += 1
        self._count("connects")
        self._decoder = FrameDecoder(self.config.max_frame_bytes)
        self._since_read = 0
        front = [Entry(encode_frame({"t": "hello", "v": PROTOCOL_VERSION, "sw": self.config.sw}), "hello")]
        if self._out is not None:  # partly sent on the old connection: resend whole
            front.append(self._out)
            self._out = None
        for cid in sorted(self._awaiting):  # sent but unanswered checks: ask again
            entry = self._awaiting[cid]
            if entry.state == "sent":
                entry.state = "queued"
                front.append(entry)
        self._ring.push_front(front)

    def _disconnect(self, reason):
        if self._connected:
            self._count("disconnects")
            self._count("disconnect_" + reason)
        self._connected = False
        self._transport.close()
        self._decoder = None

    def _io_step(self, budget_ms, read_ms, want_cid, wait_out=True):
        """Send queued frames for up to `budget_ms` (waiting for socket space only if
        `wait_out`); then read replies for up to `read_ms` (None: do not read), returning
        early once `want_cid` is answered."""
        started = compat.ticks_ms()
        self._io_at = started
        try:
            if self._out is None:
                self._ring.flush_drops()
            self._materialize_twin(False)
            while True:
                if self._out is None:
                    self._out = self._next_out()
                    if self._out is None:
                        break
                    self._out_pos = 0
                entry = self._out
                data = entry.frame if not self._out_pos else memoryview(entry.frame)[self._out_pos :]
                n = self._transport.send(data, 0)
                if n == 0:
                    left = budget_ms - compat.ticks_diff(compat.ticks_ms(), started)
                    if left <= 0 or not wait_out:
                        break
                    n = self._transport.send(data, left)
                    if n == 0:
                        break
                self._out_pos += n
                if self._out_pos >= len(entry.frame):
                    self._out = None
                    entry.state = "sent"
                    self._count("frames_sent")
                if want_cid is None and compat.ticks_diff(compat.ticks_ms(), started) >= budget_ms:
                    break
            if read_ms is None:
                return
            self._since_read = 0
            wait = read_ms
            while True:
                if want_cid is not None and want_cid in self._replies:
                    return  # another caller already read our answer
                data = self._transport.recv(wait)
                if data:
                    self._on_bytes(data)
                if not data or (want_cid is not None and want_cid in self._replies):
                    return
                if want_cid is None:
                    wait = 0
                else:
                    wait = read_ms - compat.ticks_diff(compat.ticks_ms(), started)
                    if wait <= 0:
                        return
        except TransportError as exc:
            self._disconnect(exc.reason)

    def _peek_closed(self):
        """Read what is there without waiting (a poll): replies, or the agent's close."""
        try:
            data = self._transport.recv(0)
            if data:
                self._on_bytes(data)
        except TransportError as exc:
            self._disconnect(exc.reason)

    def _next_out(self):
        """The next frame to send: records queued together go as one `recb` frame (each
        record's packed fields as they were encoded by record(), not packed again)."""
        cfg = self.config
        run = self._ring.pop_records(cfg.batch_records, min(cfg.batch_bytes, cfg.max_frame_bytes))
        if len(run) < 2:
            return run[0] if run else None
        bodies = []
        for entry in run:
            body = rec_fields(entry.frame)
            if body is None:  # not a frame record() made: should not happen; send all singly
                self._ring.push_front(run[1:])
                return run[0]
            bodies.append(body)
        self._count("record_batches")
        return Entry(encode_recb(bodies), "recb")

    def _on_bytes(self, data):
        for item in self._decoder.feed(data):  # type: ignore[union-attr]
            if isinstance(item, FrameError):
                self._count("reply_errors_" + item.code)
                if item.fatal:
                    raise TransportError("stream_lost")
                continue
            t = item.get("t")
            cid = item.get("id")
            if t == "err":
                self._count("agent_err_" + str(item.get("code")))
            if cid is not None and cid in self._awaiting:
                self._replies[cid] = item
            elif t == "ok" and cid is None:
                self._count("hello_ok")
            else:
                self._count("unmatched_replies")

    def _fallback(self, command, reason):
        action = self.config.fail_policy.action_for(command)
        self._count("check_fallbacks")
        self._count("check_fallback_" + reason)
        policy = self.config.fail_policy.mode_for(command) if isinstance(command, str) else "invalid"
        sub = command if isinstance(command, str) else None
        extra = {"reason": reason, "policy": policy}
        self._record("shim.check_fallback", None, sub, action, None, None, None, None, extra, True)
        return Verdict(action, "fallback", reason)

    # -- background pump (CPython) --------------------------------------------------------

    def _wake_pump(self):
        if self._wake is not None:
            self._wake.set()

    def _pump_loop(self):
        while not self._stopping:
            if compat.acquire(self._io_lock, 50):
                try:
                    if not self._connected:
                        self._connect_if_due(self.config.connect_timeout_ms)
                    if self._connected:
                        self._io_step(self.config.pump_interval_ms, 0, None)
                finally:
                    self._io_lock.release()
            if len(self._ring) and self._connected:
                continue
            if self._wake is not None:
                self._wake.wait(self.config.pump_interval_ms / 1000)
                self._wake.clear()


def _jitter(span_ms):
    if span_ms <= 0:
        return 0
    try:
        import random

        return random.getrandbits(16) % span_ms
    except (ImportError, AttributeError):
        return 0
