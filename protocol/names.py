"""Human-readable names for the protocol's numeric codes (protocol/SPEC.md section 5.2).

For the gateway, tools and tests; a device never imports this module, so
its strings cost no heap there.
"""

NACK_CODES = {1: "malformed", 2: "unknown_type", 3: "bad_value", 4: "not_supported", 5: "denied",
              6: "busy", 7: "not_ready", 8: "internal"}

RESET_CAUSES = {0: "unknown", 1: "power_on", 2: "hard", 3: "watchdog", 4: "deepsleep", 5: "soft", 6: "brownout"}

# alarm codes
ALARMS = {1: "fire", 2: "tamper", 3: "door_open_too_long", 4: "tilt", 5: "near_full", 6: "full",
          7: "emptied", 8: "lockout", 9: "low_battery"}

# fault codes
FAULTS = {1: "sensor_no_echo", 2: "sensor_stuck", 3: "sensor_range", 4: "lamp", 5: "lock_jam",
          6: "flash", 7: "safe_mode", 8: "config", 9: "temp_sensor", 10: "audit_overflow"}

# access results
ACCESS = {0: "ok_token", 1: "ok_command", 2: "expired", 3: "replayed", 4: "forged", 5: "wrong_compartment",
          6: "wrong_locker", 7: "locked_out", 8: "not_yet_valid", 9: "malformed", 10: "busy", 11: "no_time"}

# capability bits in a hello
CAPS = {1: "ultrasonic_trig", 2: "ultrasonic_uart", 4: "temperature", 8: "battery", 16: "pir", 32: "radar",
        64: "light_sensor", 128: "current_sense", 256: "lock", 512: "door", 1024: "occupancy",
        2048: "token_reader", 4096: "ble"}

# light telemetry states
LIGHT_STATES = {0: "day", 1: "base", 2: "full", 3: "fading", 4: "prelight", 5: "autonomous", 6: "safe", 7: "curfew",
                8: "manual"}
