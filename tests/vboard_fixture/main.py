# Demo firmware for testing the virtual-board framework (not product firmware).
# Written like device code: asyncio tasks, machine peripherals, clock from `clock`.
import asyncio
import json
import machine
from clock import ticks_ms, ticks_diff, sleep_ms, time


def load_cfg():
    try:
        with open("config.json") as f:
            return json.load(f)
    except OSError:
        return {}


def bump_boots():
    try:
        with open("boots.json") as f:
            d = json.load(f)
    except (OSError, ValueError):
        d = {"boots": 0, "causes": []}
    d["boots"] += 1
    d["causes"].append(machine.reset_cause())
    with open("boots.json", "w") as f:
        json.dump(d, f)
    return d


cfg = load_cfg()
boots = bump_boots()
print("boot", boots["boots"], "cause", machine.reset_cause(), "t", time())

led = machine.PWM(machine.Pin(2), freq=1000, duty_u16=0)
uart = machine.UART(1, 115200)
trig = machine.Pin(13, machine.Pin.OUT, value=0)
echo = machine.Pin(12, machine.Pin.IN)
lock = machine.Pin(5, machine.Pin.OUT, value=0)
button = machine.Pin(4, machine.Pin.IN, machine.Pin.PULL_UP)
adc = machine.ADC(machine.Pin(34), atten=machine.ADC.ATTN_11DB)
unlock = asyncio.Event()


def on_button(pin):
    unlock.set()


button.irq(on_button, trigger=machine.Pin.IRQ_FALLING)


async def blink():
    on = False
    while True:
        on = not on
        led.duty_u16(40000 if on else 0)
        await sleep_ms(500)


async def link_echo():
    while True:
        if uart.any():
            data = uart.read()
            if data.strip() == b"sleep":
                uart.write(b"bye\n")
                machine.deepsleep(cfg.get("deepsleep_ms", 60000))
            if data.strip() == b"reset":
                machine.reset()
            uart.write(b"echo:" + data)
        await sleep_ms(cfg.get("poll_ms", 10))


def measure_mm():
    trig.value(1)
    trig.value(0)
    us = machine.time_pulse_us(echo, 1, 30000)
    if us < 0:
        return None
    return us * 343 // 2000


async def sensor():
    while True:
        mm = measure_mm()
        mv = adc.read_uv() // 1000
        print("measure", mm, "mm", mv, "mV", "ticks", ticks_ms())
        await sleep_ms(cfg.get("measure_ms", 1000))


async def locker():
    while True:
        await unlock.wait()
        unlock.clear()
        lock.value(1)
        await sleep_ms(300)
        lock.value(0)


async def watchdog():
    wdt = machine.WDT(timeout=cfg["wdt_ms"])
    t0 = ticks_ms()
    while True:
        if ticks_diff(ticks_ms(), t0) < cfg.get("feed_for_ms", 1 << 29):
            wdt.feed()
        await sleep_ms(cfg["wdt_ms"] // 4)


async def main():
    tasks = [blink(), link_echo(), sensor(), locker()]
    if "wdt_ms" in cfg:
        tasks.append(watchdog())
    for t in tasks:
        asyncio.create_task(t)
    if "sleep_after_ms" in cfg:
        await sleep_ms(cfg["sleep_after_ms"])
        print("going to deep sleep")
        machine.deepsleep(cfg.get("deepsleep_ms", 60000))
    while True:
        await sleep_ms(3600000)


asyncio.run(main())
