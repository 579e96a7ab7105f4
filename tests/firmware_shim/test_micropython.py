"""The portable core under real MicroPython (WebAssembly port 1.27, driven by Node).

Each script runs twice, under MicroPython (where framing uses `umsgpack`) and under
CPython (where it uses the `msgpack` package), and the outputs must be identical line by
line: frames, keyed hashes and whole shim sessions byte for byte.
"""

from __future__ import annotations

import binascii
import hashlib

import msgpack

from firmware_shim import framing

# (name, Python expression): evaluated by both interpreters.
CASES = [
    ("empty", "{}"),
    ("ascii", "{'api': 'rest.GET /v1/status', 'st': 200, 'lat': 840}"),
    ("unicode", "{'sub': 'Zo\\u00eb \\u2603 \\U0001f600 \\u65e5\\u672c', 'x': {'note': '\\u00f1' * 40}}"),
    ("uint_edges", "{'n': [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1]}"),
    ("negative_edges", "{'n': [-1, -32, -33, -128, -129, -32768, -32769, -2**31, -2**31 - 1, -2**63]}"),
    ("floats", "{'f': [0.0, -0.0, 1.5, -2.25, 3.141592653589793, 1e300, -1e-300, 80.0, 0.1]}"),
    ("bytes", "{'b': [b'', b'\\x00\\xff', bytes(range(256)), b'x' * 70000]}"),
    ("str_lengths", "{'s': ['', 'a' * 31, 'a' * 32, 'a' * 255, 'a' * 256, 'a' * 65535, 'a' * 65536]}"),
    ("none_bool", "{'a': None, 'b': True, 'c': False, 'd': [None, True, False]}"),
    ("tuple_as_array", "{'t': (1, 2, 'three', (4,))}"),
    ("list_lengths", "{'l15': list(range(15)), 'l16': list(range(16)), 'big': list(range(66000))}"),
    ("many_keys", "dict(('k%02d' % i, i) for i in range(40))"),
    (
        "nested_record",
        "{'t': 'rec', 'r': {'api': 'ocpp.UnlockConnector', 'src': {'id': 'csms', 'net': '10.0.0.1'},"
        " 'sub': '1', 'st': 'Unlocked', 'lat': 1234, 'x': {'args': {'connectorId': 1,"
        " 'deep': {'z': [1, {'y': None, 'a': True}], 'b': False, 'e': {}}}}}}",
    ),
]

FRAME_SCRIPT = """
import binascii, hashlib
from firmware_shim import framing
CASES = %r
for name, src in CASES:
    obj = eval(src)
    frame = framing.encode_frame(obj)
    items = framing.FrameDecoder(framing.STREAM_LIMIT_BYTES).feed(frame)
    rt = len(items) == 1 and framing.encode_frame(items[0]) == frame
    print(name, len(frame), binascii.hexlify(hashlib.sha256(frame).digest()).decode(),
          binascii.hexlify(frame[:600]).decode(), 'rt' if rt else 'RT-FAIL')
"""


def _frame_line(name: str, frame: bytes, roundtrip: bool) -> str:
    digest = hashlib.sha256(frame).hexdigest()
    head = binascii.hexlify(frame[:600]).decode()
    return f"{name} {len(frame)} {digest} {head} {'rt' if roundtrip else 'RT-FAIL'}"


def test_frames_byte_identical_to_cpython_msgpack(micropython) -> None:
    """Frames encoded by MicroPython equal msgpack-package frames of the same objects."""
    mp_lines = micropython(FRAME_SCRIPT % (CASES,)).splitlines()
    expected = []
    for name, src in CASES:
        obj = eval(src)  # noqa: S307 - fixed test table
        body = msgpack.packb(framing._sorted_copy(obj), use_bin_type=True)
        frame = len(body).to_bytes(4, "big") + body
        assert framing.encode_frame(obj) == frame
        expected.append(_frame_line(name, frame, True))
    assert mp_lines == expected
    assert all(line.endswith(" rt") for line in mp_lines)


def test_micropython_decodes_cpython_frames_and_marks_errors(micropython) -> None:
    """The incremental decoder on MicroPython: byte-at-a-time feeding, too-large skipping
    without losing the stream, malformed bodies, and the 16 MiB stream-lost limit."""
    good = framing.encode_frame({"t": "verdict", "id": 7, "v": "block", "r": ["door-moving"]})
    big = framing.encode_frame({"t": "rec", "pad": "x" * 300})
    not_map = b"\x00\x00\x00\x01\x05"
    garbage = b"\x00\x00\x00\x02\xc1\xc1"
    stream = good + big + not_map + garbage + good + b"\x00\x00\x00\x00" + b"\x01\x00\x00\x01"
    script = f"""
from firmware_shim.framing import FrameDecoder, FrameError
d = FrameDecoder(256)
out = []
data = {stream!r}
for i in range(len(data)):
    out.extend(d.feed(data[i:i + 1]))
for item in out:
    if isinstance(item, FrameError):
        print('ERR', item.code, item.size)
    else:
        print('MAP', item['t'], item['id'], item['v'], item['r'])
print('lost', d.lost, d.feed({good!r}))
"""
    assert micropython(script).splitlines() == [
        "MAP verdict 7 block ['door-moving']",
        f"ERR too_large {len(big) - 4}",
        "ERR malformed 1",
        "ERR malformed 2",
        "MAP verdict 7 block ['door-moving']",
        "ERR malformed 0",
        f"ERR stream_lost {0x01000001}",
        "lost True []",
    ]


HASH_SCRIPT = """
from firmware_shim.redact import hash_value, Redactor
from firmware_shim.compat import hmac_sha256_portable
import binascii
KEY = b'veritrail-test-redaction-key-32b'
for value in ['04A1B2C3D4E5F6', 'Zo\\u00eb', b'\\x04\\xa1\\x00', 12345, -7, 2.5, [1, 'a'], {'b': 1, 'a': [True, None]}]:
    print(hash_value(KEY, value))
for key, msg in [(b'k', b''), (b'k' * 64, b'abc'), (b'k' * 65, b'abc' * 100), (bytes(range(200)), b'\\xff')]:
    print(binascii.hexlify(hmac_sha256_portable(key, msg)).decode())
r = Redactor(('idTag', 'password'), KEY)
out = r.apply({'api': 'x', 'x': {'idTag': 'ABC', 'nested': [{'password': 'hunter2', 'ok': 1}], 'idTagNot': 'keep'}})
print(out['x']['idTag'], out['x']['nested'][0]['password'], out['x']['nested'][0]['ok'], out['x']['idTagNot'])
"""


def test_redaction_hashes_identical_on_micropython(micropython, cpython) -> None:
    """Keyed hashes (manual HMAC on MicroPython, hmac module on CPython) agree."""
    mp = micropython(HASH_SCRIPT).splitlines()
    cp = cpython(HASH_SCRIPT).splitlines()
    assert mp == cp
    assert len(mp) == 13
    assert mp[0].startswith("h1:") and len(mp[0]) == 3 + 32
    assert mp[-1].split()[2:] == ["1", "keep"]
    assert "hunter2" not in mp[-1] and "ABC" not in mp[-1].split()[0]


SESSION_SCRIPT = """
import binascii
from firmware_shim import Shim, framing
from firmware_shim.framing import FrameDecoder, FrameError, STREAM_LIMIT_BYTES
from firmware_shim.transport import TransportError

class MemoryTransport:
    # Accepts everything, answers nothing; `up` says whether connect() succeeds.
    def __init__(self):
        self.out = bytearray()
        self.up = False
    def connect(self, timeout_ms):
        if not self.up:
            raise TransportError('refused')
    def send(self, data, timeout_ms):
        self.out.extend(bytes(data))
        return len(data)
    def recv(self, timeout_ms):
        return b''
    def close(self):
        pass

t = MemoryTransport()
s = Shim(transport=t, ring_frames=4, backoff_min_ms=1, backoff_max_ms=1,
         redact_fields=('idTag', 'card'), redact_key=b'veritrail-test-redaction-key-32b',
         fail_policy={'tcu.door_*': 'closed'})
for i in range(7):  # agent away: 4 fit in the ring, 3 are dropped
    s.record('ocpp.Authorize', src={'id': 'csms', 'net': '10.1.1.1'}, sub=str(i), st='Accepted',
             lat=1234 + i, rq=80, rs=40, idTag='04A1B2C3', meter=[1.5, -2, 2**40])
s.update({'vehicle.speed': 12.5, 'tx.active': True})
s.update({'vehicle.speed': 0.0})
v = s.check('tcu.door_unlock', {'door': 'driver', 'card': b'\\x01\\x02'}, src='app', deadline_ms=30)
print('verdict', v.action, v.source, v.reason, bool(v))
t.up = True
s.poll(0)
s.record('rest.GET /v1/status', st=200)
v = s.check('tcu.horn', {}, src='app', deadline_ms=30)
print('verdict', v.action, v.source, v.reason, bool(v))
s.poll(0)
print('dropped', sorted(s.stats()['dropped'].items()))
for item in FrameDecoder(STREAM_LIMIT_BYTES).feed(bytes(t.out)):
    if isinstance(item, FrameError):
        print('ERR', item.code)
    elif item['t'] == 'rec':
        print('rec', item['r']['api'], item['r'].get('sub'), sorted((item['r'].get('x') or {}).items()))
    elif item['t'] == 'recb':
        print('recb', len(item['b']))
        for body in item['b']:
            r = framing.decode_body(body)
            print('recb-item', r['api'], r.get('sub'), sorted((r.get('x') or {}).items()))
    elif item['t'] == 'drop':
        print('drop', item['n'], item['reason'])
    else:
        print(item['t'], sorted(k for k in item if k != 't'))
print(binascii.hexlify(bytes(t.out)).decode())
"""


def test_whole_shim_session_identical_on_micropython(micropython, cpython, tmp_path) -> None:
    """record/update/check with the agent away, ring overflow, reconnect: MicroPython
    sends exactly the bytes CPython sends, in the same order."""
    mp = micropython(SESSION_SCRIPT).splitlines()
    cp = cpython(SESSION_SCRIPT).splitlines()
    assert mp == cp
    assert mp[0] == "verdict block fallback no_agent False"  # door: fail-closed
    assert mp[1] == "verdict allow fallback timeout True"  # horn: fail-open, agent silent
    assert mp[2] == "dropped [('ring_overflow', 3)]"
    kinds = [line.split()[0] for line in mp[3:-1]]
    # the four records queued while the agent was away go as one recb frame (a record batch)
    assert kinds == ["hello", "recb", "recb-item", "recb-item", "recb-item", "recb-item", "drop", "upd",
                     "rec", "rec", "chk", "rec"]
    assert mp[4] == "recb 4"
    assert [line.split()[2] for line in mp[5:9]] == ["0", "1", "2", "3"]  # oldest kept, in order
    assert mp[9] == "drop 3 ring_overflow"  # the gap, reported where it is
    assert mp[11].startswith("rec shim.check_fallback tcu.door_unlock")  # the fallback is recorded
    assert "04A1B2C3" not in "".join(mp[:-1])
    # The real agent takes MicroPython's stream as it is: every record sealed, in order, the
    # batch's records with MicroPython's own bytes.
    from agent.core.record import decode, is_canonical
    from agent.spool import Spool
    from agent.testing import AgentHarness

    stream = binascii.unhexlify(mp[-1])
    with AgentHarness(tmp_path / "agent") as h:
        c = h.client()
        c.send_raw(stream + framing.encode_frame({"t": "rec", "id": 10**6, "sync": True, "r": {"api": "end"}}))
        replies = [c.recv()]
        while replies[-1].get("id") != 10**6:  # the hello's ok and the chk's verdict come first
            replies.append(c.recv())
        c.close()
    assert [r["t"] for r in replies] == ["ok", "verdict", "ok"], replies
    spool = Spool(h.config.spool_path, readonly=True)
    try:
        recs = [d for b in spool.iter_blocks() for d in b.records]
    finally:
        spool.close()
    apis = [(decode(d)["api"], decode(d).get("sub")) for d in recs]
    assert apis[1:6] == [("ocpp.Authorize", str(i)) for i in range(4)] + [("agent.shim_drop", None)]
    assert ("shim.check_fallback", "tcu.door_unlock") in apis and ("rest.GET /v1/status", None) in apis
    assert all(is_canonical(d) for d in recs)  # MicroPython's msgpack is canonical
