"""Smart locker firmware: offline-verified access, bounded lock pulses, audited doors.

Modules: compartment (solenoid pulse, debounced inputs, door state machine), reader
(token reader frames), usedids (single-use memory on flash: token ids, unlock
requests), access (the token decision and the reader's lockout), audit (flash ring of
events until the gateway acks them), flash (CRC'd files), app (wiring), setup (boot,
config and self test, off the heap in service).
"""
