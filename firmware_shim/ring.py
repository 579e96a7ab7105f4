"""The RAM ring: frames waiting for the agent, in order, bounded, every drop counted.

Records count against `max_frames`/`max_bytes`; when full the *newest* record is dropped
(the ring keeps a contiguous history from the moment the agent went away) and counted by
reason. The shim's own security records (`priority`) may use a reserve of a quarter more.
Checks, twin and drop frames are not counted here: they are bounded by their callers (one
per waiting `check()`, one coalesced twin frame, one per drop reason). Pending drop counts
become `drop` frames placed exactly where the gap is: before the next accepted frame, or
at the end once the ring has drained (`flush_drops`).

Portable core: runs unchanged on CPython and MicroPython.
"""

from firmware_shim import compat
from firmware_shim.framing import encode_frame

__all__ = ["Ring", "Entry"]


class Entry:
    # kind: "rec" | "upd" | "chk" | "drop" | "hello"; state of a chk: "queued" | "sent"
    def __init__(self, frame, kind, cid=None, priority=False):
        self.frame = frame
        self.kind = kind
        self.cid = cid
        self.priority = priority
        self.state = "queued"


class Ring:
    def __init__(self, max_frames, max_bytes):
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self._lock = compat.make_lock()
        self._items = []
        self.bytes = 0
        self.records = 0
        self.dropped = {}  # reason -> total since start
        self._pending = {}  # reason -> not yet reported to the agent

    def __len__(self):
        return len(self._items)

    def full(self):
        return self.records >= self.max_frames

    def unreported(self):
        """Drops counted but not yet placed in the ring as a `drop` frame."""
        return len(self._pending)

    def drop(self, reason, n):
        self.dropped[reason] = self.dropped.get(reason, 0) + n
        self._pending[reason] = self._pending.get(reason, 0) + n

    def _add(self, entry):
        self._items.append(entry)
        self.bytes += len(entry.frame)

    def _drop_frames(self):
        for reason in list(self._pending):
            n = self._pending.pop(reason)
            self._add(Entry(encode_frame({"t": "drop", "n": n, "reason": reason}), "drop"))

    def push(self, entry):
        """Append; False (and counted) if a record does not fit."""
        compat.acquire(self._lock, 1000)
        try:
            if entry.kind == "rec":
                frames, limit = self.max_frames, self.max_bytes
                if entry.priority:
                    frames += max(1, frames // 4)
                    limit += limit // 4
                if self.records >= frames or self.bytes + len(entry.frame) > limit:
                    self.drop("ring_overflow", 1)
                    return False
                self.records += 1
            if self._pending:
                self._drop_frames()
            self._add(entry)
            return True
        finally:
            self._lock.release()

    def push_front(self, entries):
        """Put entries back at the head (resent after a reconnect), in the given order."""
        compat.acquire(self._lock, 1000)
        try:
            for entry in entries:
                self.bytes += len(entry.frame)
                if entry.kind == "rec":
                    self.records += 1
            self._items = list(entries) + self._items
        finally:
            self._lock.release()

    def pop(self):
        compat.acquire(self._lock, 1000)
        try:
            if not self._items:
                return None
            entry = self._items.pop(0)
            self.bytes -= len(entry.frame)
            if entry.kind == "rec":
                self.records -= 1
            return entry
        finally:
            self._lock.release()

    def pop_records(self, max_records, max_bytes):
        """Pop the head entry; when it is a record, also the records queued right after it
        (up to `max_records` entries and `max_bytes` of frames): the caller sends them as one
        batch. Stops at any other entry, so drop frames stay exactly where the gap is."""
        if not self._items:  # no lock needed to see an empty ring (a push racing this is next)
            return []
        compat.acquire(self._lock, 1000)
        try:
            items = self._items
            if not items:
                return []
            k, size = 1, len(items[0].frame)
            if items[0].kind == "rec":
                while k < len(items) and k < max_records:
                    entry = items[k]
                    if entry.kind != "rec" or size + len(entry.frame) > max_bytes:
                        break
                    size += len(entry.frame)
                    k += 1
            run = items[:k]
            self._items = items[k:]
            self.bytes -= size
            for entry in run:
                if entry.kind == "rec":
                    self.records -= 1
            return run
        finally:
            self._lock.release()

    def remove(self, entry):
        """Take out an entry not sent yet (a check that already fell back)."""
        compat.acquire(self._lock, 1000)
        try:
            if entry in self._items:
                self._items.remove(entry)
                self.bytes -= len(entry.frame)
                if entry.kind == "rec":
                    self.records -= 1
        finally:
            self._lock.release()

    def flush_drops(self):
        """Report pending drops now if nothing else is queued to carry them."""
        if self._pending and not self._items:
            compat.acquire(self._lock, 1000)
            try:
                self._drop_frames()
            finally:
                self._lock.release()
