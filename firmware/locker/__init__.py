"""Smart locker firmware: offline-verified access, bounded lock pulses, audited doors.

One job per module: actuator (solenoid pulse), debounce (door/occupancy inputs),
reader (token reader frames), usedids + recent (single-use memory on flash),
lockout (failure throttling), access (the token decision), audit (flash ring of
events until the gateway acks them), compartment (door state machine), app (wiring).
"""
