"""Vehicle/TCU model and backends without an agent (RecordingLink)."""

from __future__ import annotations

from hw_sim.backends import dealer_portal, owner_app
from hw_sim.clock import ManualClock
from hw_sim.link import RecordingLink, Verdict
from hw_sim.vehicle import VehicleConfig, VehicleModel


def make():
    link = RecordingLink()
    return VehicleModel(VehicleConfig(), link=link), link, ManualClock()


def test_drive_moves_and_parks_at_destination_using_energy():
    car, link, _ = make()
    soc0 = car.twin()["battery.soc"]
    car.enter()
    car.drive_to("work", 60)
    car.tick(30)
    assert link.state["vehicle.is_moving"] is True and link.state["vehicle.speed"] == 60
    assert link.state["vehicle.gear"] == "D"
    for _ in range(200):
        car.tick(10)
        if car.arrived:
            break
    assert car.arrived and car.geofence() == "work"
    assert link.state["vehicle.speed"] == 0 and link.state["vehicle.gear"] == "P"
    assert link.state["battery.soc"] < soc0


def test_charge_until_target_then_stops():
    car, link, _ = make()
    car.plug_in(power_kw=11, target_soc=70)
    car.tick(1)
    assert link.state["charging.is_charging"] is True and link.state["charging.cable_locked"] is True
    for _ in range(100):
        car.tick(600)
    assert link.state["charging.is_charging"] is False and link.state["battery.soc"] == 70


async def test_signed_command_carries_token_signature_and_nonce_to_the_agent():
    car, link, clock = make()
    app = owner_app(clock, seed=1)
    owner = app.principal("owner-1", "owner", signing=True)
    app.enroll_key(owner, car)
    res = await app.send(car, owner, "door_unlock")
    assert res.status == "ok" and link.state["vehicle.doors_locked"] is False
    cmd, args, src, sub = link.checks[-1]
    assert cmd == "tcu.door_unlock" and sub == car.vin
    assert {k: src[k] for k in ("id", "auth", "role", "channel", "kid", "net")} == {
        "id": "owner-1", "auth": "oauth", "role": "owner", "channel": "app", "kid": "app:owner-1", "net": "100.64.7.9"}
    assert src["token"]["aud"] == car.vin and src["sig"] == "valid" and src["nonce"]
    assert src["ts"] == clock.now_ms() > 0   # stamped as it leaves the backend (ManualClock: no lag)


async def test_replayed_command_is_identical_and_forged_signature_fails():
    car, link, clock = make()
    app = owner_app(clock, seed=2)
    owner = app.principal("owner-1", "owner", signing=True)
    app.enroll_key(owner, car)
    cmd = app.command(owner, car.vin, "door_unlock")
    await app.deliver(car, cmd)
    clock.advance(2 * 3600 * 1000)
    await app.replay(car, cmd)
    first, second = link.checks[-2][2], link.checks[-1][2]
    assert (first["nonce"], first["ts"]) == (second["nonce"], second["ts"])   # a replay: same nonce and time
    stranger = dealer_portal(clock).principal("x", "dealer", signing=True)   # key not enrolled
    res = await app.deliver(car, app.command(stranger, car.vin, "door_unlock"))
    assert res.status == "rejected" and link.checks[-1][2]["sig"] == "invalid"


async def test_refused_verdict_is_not_carried_out():
    car, link, clock = make()
    link.verdicts["tcu.door_unlock"] = Verdict(v="block", rules=("TCU-01",))
    app = owner_app(clock)
    p = app.principal("owner-1", "owner")
    res = await app.send(car, p, "door_unlock")
    assert res.status == "rejected" and car.twin()["vehicle.doors_locked"] is True
