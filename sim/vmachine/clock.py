# clock (virtual-board build): shadows firmware/common/clock.py inside a vboard VM
# because /_vmachine is first on sys.path there. Firmware imports
#     from clock import ticks_ms, ticks_diff, ticks_add, sleep_ms, sleep, now, time
# and gets the device implementation on an ESP32, this one on a virtual board.
from vclock import *  # noqa: F401,F403
from vclock import VALID_FROM, VIRTUAL, ticks_ms, ticks_us, ticks_diff, ticks_add, time, time_ms, now, sleep_ms, sleep, set_time  # noqa: F401,E501
