"""Every numeric code of protocol/SPEC.md, defined once, for devices and the gateway alike.

Only integers (micropython.const): a device imports the few names it uses
without paying for words. The words for humans are in protocol/names.py (host
only), built from these names: the part after the prefix, in lower case.
Message type ids are the codes of protocol.messages' schema table.
"""

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

# direction, in external_aad (SPEC 3)
UP = const(0)
DOWN = const(1)

# device id = COSE kid: 1 to MAX_KID bytes (SPEC 1, 3)
MAX_KID = const(8)

# config command: setting names of 1 to MAX_CONFIG_KEY bytes (SPEC 5, config)
MAX_CONFIG_KEY = const(12)

# hello role (SPEC 5)
ROLE_CONTAINER_SENSOR = const(1)
ROLE_LIGHT_POLE = const(2)
ROLE_LOCKER = const(3)

# hello caps bits (SPEC 5.2)
CAP_ULTRASONIC_TRIG = const(1)
CAP_ULTRASONIC_UART = const(2)
CAP_TEMPERATURE = const(4)
CAP_BATTERY = const(8)
CAP_PIR = const(16)
CAP_RADAR = const(32)
CAP_LIGHT_SENSOR = const(64)
CAP_CURRENT_SENSE = const(128)
CAP_LOCK = const(256)
CAP_DOOR = const(512)
CAP_OCCUPANCY = const(1024)
CAP_TOKEN_READER = const(2048)
CAP_BLE = const(4096)

# heartbeat status: the reset cause in bits 0-2, then flags (SPEC 5.2)
CAUSE_UNKNOWN = const(0)
CAUSE_POWER_ON = const(1)
CAUSE_HARD = const(2)
CAUSE_WATCHDOG = const(3)
CAUSE_DEEPSLEEP = const(4)
CAUSE_SOFT = const(5)
CAUSE_BROWNOUT = const(6)
ST_CAUSE_MASK = const(7)
ST_SAFE_MODE = const(8)
ST_TIME_VALID = const(16)
ST_LINK_ONLY = const(32)

# nack codes
E_MALFORMED = const(1)
E_UNKNOWN_TYPE = const(2)
E_BAD_VALUE = const(3)
E_NOT_SUPPORTED = const(4)
E_DENIED = const(5)
E_BUSY = const(6)
E_NOT_READY = const(7)
E_INTERNAL = const(8)

# alarm codes
A_FIRE = const(1)
A_TAMPER = const(2)
A_DOOR_OPEN_TOO_LONG = const(3)
A_TILT = const(4)
A_NEAR_FULL = const(5)
A_FULL = const(6)
A_EMPTIED = const(7)
A_LOCKOUT = const(8)
A_LOW_BATTERY = const(9)

# fault codes
F_SENSOR_NO_ECHO = const(1)
F_SENSOR_STUCK = const(2)
F_SENSOR_RANGE = const(3)
F_LAMP = const(4)
F_LOCK_JAM = const(5)
F_FLASH = const(6)
F_SAFE_MODE = const(7)
F_CONFIG = const(8)
F_TEMP_SENSOR = const(9)
F_AUDIT_OVERFLOW = const(10)
F_RADIO = const(11)
F_MEMORY = const(12)
# fault radio: its value says why the configured radio cannot be used (SPEC 5.2)
RADIO_NO_BLE = const(1)
RADIO_NO_WIFI = const(2)
RADIO_NO_CREDENTIALS = const(3)

# access results
ACC_OK_TOKEN = const(0)
ACC_OK_COMMAND = const(1)
ACC_EXPIRED = const(2)
ACC_REPLAYED = const(3)
ACC_FORGED = const(4)
ACC_WRONG_COMPARTMENT = const(5)
ACC_WRONG_LOCKER = const(6)
ACC_LOCKED_OUT = const(7)
ACC_NOT_YET_VALID = const(8)
ACC_MALFORMED = const(9)
ACC_BUSY = const(10)
ACC_NO_TIME = const(11)

# light telemetry state
LS_DAY = const(0)
LS_BASE = const(1)
LS_FULL = const(2)
LS_FADING = const(3)
LS_PRELIGHT = const(4)
LS_AUTONOMOUS = const(5)
LS_SAFE = const(6)
LS_CURFEW = const(7)
LS_MANUAL = const(8)

# software updates (SPEC 10): what an update carries
UK_APP = const(0)  # the firmware's .mpy files, staged into the other file-system slot
UK_RUNTIME = const(1)  # a MicroPython image, written into the other OTA partition (CAP_OTA_IMAGE)
CAP_OTA_IMAGE = const(8192)  # hello caps: the board has OTA app partitions and a rollback bootloader
UPD_CHUNK_MAX = const(192)  # update_chunk data bytes: the largest envelope stays within framing.MAX_ENVELOPE
UPD_SIZE_MAX = const(4194304)  # 4 MiB: a MicroPython image fits; an app image is far smaller
# update state, in the uplink `update`
US_IDLE = const(0)
US_RECEIVING = const(1)
US_STAGED = const(2)
US_TRIAL = const(3)
US_VALID = const(4)
US_ROLLED_BACK = const(5)
US_REFUSED = const(6)
US_ABORTED = const(7)
# update reason, in the uplink `update` (0 when there is none)
UR_NONE = const(0)
UR_ROLE = const(1)
UR_MPY = const(2)
UR_DOWNGRADE = const(3)
UR_RUNTIME = const(4)
UR_SCHEMA = const(5)
UR_SPACE = const(6)
UR_DIGEST = const(7)
UR_IMAGE = const(8)
UR_OFFSET = const(9)
UR_BUSY = const(10)
UR_TRIAL = const(11)
UR_UNKNOWN = const(12)
UR_FLASH = const(13)
UR_KIND = const(14)
