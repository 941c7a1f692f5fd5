# mypy: ignore-errors
# The device runtime every role shares (micropython-lib style; read by park-device and a frozen build).
# vmachine/ is the virtual board's simulated hardware and never goes onto a board.
metadata(description="park-edge device runtime: HAL, config, link session, store, boot counter", version="1.0.0")

require("protocol")

package(
    "common",
    files=(
        "__init__.py",
        "ble.py",
        "clock.py",
        "config.py",
        "errors.py",
        "hal.py",
        "link.py",
        "ota.py",
        "ota_inst.py",
        "ota_offer.py",
        "ota_part.py",
        "ota_rx.py",
        "ota_state.py",
        "ota_trial.py",
        "otaboot.py",
        "rare.py",
        "runtime.py",
        "selftest.py",
        "session.py",
        "start.py",
        "store.py",
        "storelog.py",
        "ticks.py",
        "wifi.py",
    ),
    base_path="..",
)

# MicroPython runs /main.py by name: it stays a source file on the board (and out of a frozen image,
# so `park-device recover` can always remove it).
module("main.py")
