"""park-device: the technician's tool for park-edge boards (ports, flash, deploy, provision, selftest, monitor,
recover, manifest).

See docs/technician.md. Library use: each command is a function returning
(summary line, result dict) and raising a typed park_device.errors.DeviceToolError.
"""
__version__ = "0.1.0"
