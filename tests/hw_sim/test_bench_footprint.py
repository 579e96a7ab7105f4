"""`veritrail bench footprint --quick --json` runs end to end (daemon, real broker, real
collector, load through the real shim) and its figures are consistent: the keys the issue
names, the goals beside them, the idle baseline of the same run, records shipped and
receipted. Whether the goals are met is the bench's report (docs/device-makers.md), not a
timed test."""

from __future__ import annotations

from tests.test_bench_cli import _bench


def test_bench_footprint_reports_rss_cpu_and_bytes_written_for_each_phase() -> None:
    d, err = _bench("footprint")
    for phase in ("idle", "typical", "burst"):
        assert f"footprint: {phase}" in err
    for key in ("peak_rss_mib", "cpu_percent_typical", "bytes_written_per_hour",
                "peak_rss_mib_burst", "cpu_percent_burst", "bytes_written_per_hour_burst"):
        assert isinstance(d[key], (int, float)) and d[key] >= 0, key
    assert d["goal_peak_rss_mib"] == 40 and d["goal_cpu_percent_typical"] == 5 and d["goal_bytes_written_per_hour"] == 50e6
    assert d["meets_goals"] == (d["peak_rss_mib"] <= 40 and d["cpu_percent_typical"] <= 5
                                and d["bytes_written_per_hour"] <= 50e6)
    # VmHWM only grows phase by phase (batched per-thread counters: allow a few hundred KiB)
    assert d["peak_rss_mib_idle"] <= d["peak_rss_mib"] + 0.5 <= d["peak_rss_mib_burst"] + 1.0
    assert d["bytes_written_per_hour"] > 0 and d["bytes_written_per_hour_burst"] > d["bytes_written_per_hour"]
    assert d["records_typical"] >= 0.9 * 50 * d["seconds_typical"] and d["checks_typical"] >= 1
    assert d["shim_drops"] == 0 and d["uplink_connected"]
    assert d["uplink_records_sent"] > 0 and d["uplink_receipts_applied"] > 0  # the collector stored and receipted
