"""Park wire protocol: one implementation for the ESP32 (MicroPython) and the gateway (CPython).

Data flows link -> framing -> envelope (COSE_Mac0) -> messages. See protocol/SPEC.md.
"""
