"""deploy/mosquitto: mutual TLS and the ACL keep each device in its own topics."""

from __future__ import annotations

import shutil
import ssl
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.cloud_collector.harness import MqttProbe
from tests.cloud_collector.pki import TestPKI
from tests.mqtt_broker import Broker, free_port, wait_for

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    pki = TestPKI(d / "pki")
    port = free_port()
    acl = d / "veritrail.acl"
    shutil.copy(DEPLOY / "veritrail.acl", acl)
    (d / "data").mkdir()
    text = (DEPLOY / "mosquitto.conf").read_text()
    for old, new in (("/etc/mosquitto/veritrail.acl", str(acl)), ("/var/lib/mosquitto/", f"{d / 'data'}/"),
                     ("/etc/mosquitto/certs/ca.crt", str(pki.ca_file)),
                     ("/etc/mosquitto/certs/server.crt", str(pki.server_cert)),
                     ("/etc/mosquitto/certs/server.key", str(pki.server_key)),
                     ("listener 8883", f"listener {port} 127.0.0.1")):
        assert old in text, old
        text = text.replace(old, new)
    with Broker(d / "broker", port=port, config_text=text) as b:
        yield b, pki


def client(broker, pki, cn: str) -> MqttProbe:
    cert, key = pki.issue(cn)
    return MqttProbe(broker.port, cn, ca_certs=str(pki.ca_file), certfile=str(cert), keyfile=str(key))


def test_device_cannot_publish_into_or_read_another_devices_topics(tls_broker):
    broker, pki = tls_broker
    collector = client(broker, pki, "vt-collector")
    a, b = client(broker, pki, "cp-A"), client(broker, pki, "cp-B")
    try:
        collector.subscribe("vt/v1/dev/+/up")
        a.subscribe("vt/v1/dev/cp-B/rcpt")   # not allowed: must never deliver
        a.subscribe("vt/v1/dev/cp-A/rcpt")
        b.subscribe("vt/v1/dev/cp-B/rcpt")
        a.publish("vt/v1/dev/cp-A/up", b"mine")
        forged_mid = a.publish("vt/v1/dev/cp-B/up", b"forged")
        a.publish("vt/v1/dev/cp-A/status", b"online")  # allowed, but nobody here listens
        a.publish("vt/v1/dev/cp-A/up", b"fence")
        wait_for(lambda: [p for _, p, _ in collector.messages] == [b"mine", b"fence"], 10, "collector sees A's own")
        assert dict(a.acks)[forged_mid] == "Not authorized"
        assert not any(t.startswith("vt/v1/dev/cp-B/") for t, _, _ in collector.messages)
        collector.publish("vt/v1/dev/cp-B/rcpt", b"for B")
        collector.publish("vt/v1/dev/cp-A/rcpt", b"for A")
        wait_for(lambda: b.messages and a.messages, 10, "receipts delivered")
        assert [(t, p) for t, p, _ in a.messages] == [("vt/v1/dev/cp-A/rcpt", b"for A")]
        assert [(t, p) for t, p, _ in b.messages] == [("vt/v1/dev/cp-B/rcpt", b"for B")]
        # a device cannot write receipts or control for anyone, itself included
        fake = a.publish("vt/v1/dev/cp-A/rcpt", b"self-receipt")
        assert dict(a.acks)[fake] == "Not authorized"
    finally:
        for c in (collector, a, b):
            c.close()


def test_client_without_certificate_is_refused(tls_broker):
    broker, pki = tls_broker
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="anon", protocol=mqtt.MQTTv5)
    c.tls_set(ca_certs=str(pki.ca_file))
    with pytest.raises((ssl.SSLError, OSError)):
        c.connect("127.0.0.1", broker.port)
        for _ in range(50):  # TLS 1.3 reports the missing certificate on the first read
            if c.loop(0.1) != mqtt.MQTT_ERR_SUCCESS:
                raise OSError("connection closed by the broker")
    assert not c.is_connected()
