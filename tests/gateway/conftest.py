"""Fixtures for the gateway tests: a real Mosquitto broker and an MQTT subscriber."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

import paho.mqtt.client as paho

from sim.broker import Mosquitto, mosquitto_binary


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A fresh broker on a free loopback port (persistence on, so outages keep sessions)."""
    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed; run ./dev setup (apt package `mosquitto`)")
    broker = Mosquitto(persistence_dir=tmp_path / "mosquitto-db")
    broker.start()
    yield broker
    broker.close()


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Path:
    """A test CA, a server certificate for 127.0.0.1/localhost and a client certificate (openssl CLI)."""
    d = tmp_path_factory.mktemp("pki")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for ca in ("ca", "other-ca"):
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
            "-days", "2", "-subj", f"/CN=park-test-{ca}")
    for name, ext in (("server", ["-extfile", "san.ext"]), ("client", [])):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN=park-test-{name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", *ext)
    for key in d.glob("*.key"):
        os.chmod(key, 0o600)
    return d


class Subscriber:
    """A paho-mqtt client in its own thread that records every message it gets."""

    def __init__(self, broker: Mosquitto, topic: str = "#", *, client_id: str | None = None,
                 clean: bool = True, username: str | None = None, password: str | None = None,
                 port: int | None = None) -> None:
        self.messages: list[paho.MQTTMessage] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.topic = topic
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id or "",
                                  clean_session=clean)
        self.client.reconnect_delay_set(0.05, 0.5)
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect(broker.host, port or broker.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("subscriber did not get SUBACK")

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(msg)

    def reconnect_to(self, broker: Mosquitto) -> None:
        self._subscribed.clear()
        self.client.reconnect()
        if not self._subscribed.wait(10):
            raise RuntimeError("subscriber did not get SUBACK after reconnect")

    def on(self, topic_part: str) -> list[paho.MQTTMessage]:
        with self._lock:
            return [m for m in self.messages if topic_part in m.topic]

    def json_on(self, topic_part: str) -> list[Any]:
        return [json.loads(m.payload) for m in self.on(topic_part)]

    def wait(self, predicate: Callable[[], bool], timeout: float = 15.0, what: str = "messages") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.01)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; got {len(self.messages)} messages")

    async def until(self, predicate: Callable[[], bool], timeout: float = 15.0, what: str = "messages") -> None:
        """``wait`` for async tests: keeps the event loop (and the uplink) running."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; got {len(self.messages)} messages")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscriber_factory() -> Iterator[Callable[..., Subscriber]]:
    made: list[Subscriber] = []

    def make(broker: Mosquitto, topic: str = "#", **kw: Any) -> Subscriber:
        s = Subscriber(broker, topic, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        try:
            s.close()
        except Exception:
            pass
