"""Any bytes into the verifier yield a verified range or one of our errors, never a crash."""

import io

from hypothesis import HealthCheck, given, settings, strategies as st

from agent.core.errors import ExportMalformed, VeritrailError
from agent.core.export import read_export, verify_stream, write_export
from tests.core.helpers import Device

_DEV = Device()
for _n in (4, 2, 3):
    _DEV.batch(_n)
_TRUST = _DEV.trust()


def _export(items) -> bytes:
    buf = io.BytesIO()
    write_export(buf, {"dev": _DEV.device_id, "keys": [], "start": None}, items)
    return buf.getvalue()


_GOOD = _export(_DEV.items)


def _check(data: bytes) -> None:
    try:
        header, items = read_export(data)
    except ExportMalformed:
        return
    try:
        report = verify_stream(_TRUST, items, header.get("start"))
    except ExportMalformed:
        return
    assert report.ok or isinstance(report.error, VeritrailError)


@given(st.binary(max_size=600))
@settings(max_examples=400)
def test_random_bytes(data):
    _check(data)


@given(st.data())
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_valid_export(data):
    buf = bytearray(_GOOD)
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(buf)))
    _check(bytes(buf[:cut]))


@given(st.lists(st.tuples(st.binary(max_size=300), st.lists(st.binary(max_size=60), max_size=4)), max_size=5))
@settings(max_examples=300)
def test_structurally_valid_garbage_items(items):
    report = verify_stream(_TRUST, items)
    assert report.ok == (items == []) or isinstance(report.error, VeritrailError)


def test_honest_export_round_trips():
    header, items = read_export(_GOOD)
    report = verify_stream(_TRUST, items, header["start"])
    assert report.ok and report.records == 9
