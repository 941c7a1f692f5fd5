"""The simulator: everything that lets the park run on a laptop or in CI, and is never installed.

Nothing here goes onto a board or a Raspberry Pi (the wheel built from pyproject.toml holds
none of it). Each fake is named as one:

- ``sim.vmachine``: the virtual board's ``machine`` module (pins, PWM, ADC, UART, RTC, deep sleep);
- ``sim.mpvm``: the real MicroPython VM (the official WebAssembly port under Node);
- ``sim.vboard``: virtual boards, one MicroPython VM per boot with a flash that survives resets;
- ``sim.devsim``: a CPython device simulator, a test peer built from ``protocol.codec``;
- ``sim.fakeble``: a fake BLE radio for the gateway's BLE link;
- ``sim.broker``: a real Mosquitto started on a free loopback port;
- ``sim.demo``: the simulated Stadtpark (``python -m sim demo``, ``./dev demo``).

Run from the checkout's root (``python -m sim ...``), where ``sim`` is importable.
"""
