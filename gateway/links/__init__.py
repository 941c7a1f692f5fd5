"""Links: byte transports between the gateway and devices (serial, pyserial URL, TCP server/client, BLE pool/one)."""

from __future__ import annotations

from gateway.config import LinkConfig, listen_address
from gateway.links.base import Backoff, Link
from gateway.links.ble import BleLink, BlePool
from gateway.links.pressure import Backpressure
from gateway.links.serial import SerialLink, UrlLink
from gateway.links.tcp import TcpLink, TcpServerLink
from gateway.seams import FrameSink

__all__ = ["Link", "Backoff", "TcpLink", "TcpServerLink", "SerialLink", "UrlLink", "BleLink", "BlePool",
           "Backpressure", "make_link"]


def make_link(cfg: LinkConfig, sink: FrameSink, ble_factory=None, pressure: Backpressure | None = None) -> Link:
    """The link a [[links]] entry describes, feeding `sink` (the sessions).

    ble_factory: for a BLE pool, the backend (the bleak module by default; tests pass
    sim.fakeble.FakeBleRadio); for a one-device BLE link, `factory(address, disconnected_callback)`.
    pressure: the daemon's Backpressure; the link stops reading while it says so.
    """
    link = _make(cfg, sink, ble_factory)
    link.pressure = pressure
    return link


def _make(cfg: LinkConfig, sink: FrameSink, ble_factory) -> Link:
    on_envelope, on_error = sink.on_envelope, sink.on_frame_error
    if cfg.type == "serial":
        return SerialLink(cfg.name, cfg.port, on_envelope, on_error, cfg.baudrate, min(cfg.reconnect_max, 2.0))
    if cfg.type == "tcp" and cfg.listen:
        listen = listen_address(cfg.listen)
        if listen is None:
            raise ValueError("link %s: listen %r is not HOST:PORT" % (cfg.name, cfg.listen))
        return TcpServerLink(cfg.name, listen, on_envelope, on_error, cfg.reconnect_max,
                             auth_timeout=cfg.auth_timeout, max_clients=cfg.max_clients,
                             write_queue=cfg.write_queue)
    if cfg.type in ("tcp", "url") and cfg.url.startswith(("tcp://", "socket://")):
        return TcpLink(cfg.name, cfg.url, on_envelope, on_error, cfg.reconnect_max)
    if cfg.type == "url":
        return UrlLink(cfg.name, cfg.url, on_envelope, on_error, cfg.baudrate, cfg.reconnect_max)
    if cfg.type == "ble" and not cfg.address:
        return BlePool(cfg.name, on_envelope, on_error, sink.devices, backend=ble_factory,
                       max_connections=cfg.max_connections, queue=cfg.queue, idle_s=cfg.idle_s, hold_s=cfg.hold_s,
                       advert_ttl=cfg.advert_ttl, connect_timeout=cfg.connect_timeout, adapter=cfg.adapter,
                       reconnect_max=cfg.reconnect_max)
    if cfg.type == "ble":
        return BleLink(cfg.name, cfg.address, on_envelope, on_error, cfg.reconnect_max, ble_factory)
    raise ValueError("link %s: unknown type %r" % (cfg.name, cfg.type))
