"""Entry point of the uplink process (``python -m gateway.uplink._child``; gateway/uplink/process.py starts it)."""

from gateway.uplink.process import main

main()
