"""Links: byte transports between the gateway and devices (serial, pyserial URL/TCP, BLE)."""

from __future__ import annotations

from gateway.config import LinkConfig
from gateway.links.base import Backoff, Link
from gateway.links.ble import BleLink
from gateway.links.serial import SerialLink, UrlLink
from gateway.links.tcp import TcpLink
from gateway.seams import FrameSink

__all__ = ["Link", "Backoff", "TcpLink", "SerialLink", "UrlLink", "BleLink", "make_link"]


def make_link(cfg: LinkConfig, sink: FrameSink, ble_factory=None) -> Link:
    """The link a [[links]] entry describes, feeding `sink` (the sessions)."""
    on_envelope, on_error = sink.on_envelope, sink.on_frame_error
    if cfg.type == "serial":
        return SerialLink(cfg.name, cfg.port, on_envelope, on_error, cfg.baudrate, min(cfg.reconnect_max, 2.0))
    if cfg.type in ("tcp", "url") and cfg.url.startswith(("tcp://", "socket://")):
        return TcpLink(cfg.name, cfg.url, on_envelope, on_error, cfg.reconnect_max)
    if cfg.type == "url":
        return UrlLink(cfg.name, cfg.url, on_envelope, on_error, cfg.baudrate, cfg.reconnect_max)
    if cfg.type == "ble":
        return BleLink(cfg.name, cfg.address, on_envelope, on_error, cfg.reconnect_max, ble_factory)
    raise ValueError("link %s: unknown type %r" % (cfg.name, cfg.type))
