"""flash: write a MicroPython firmware image with esptool, after checking the chip type.

The image says which chip it was built for (chip_id in the ESP image header); the
chip says what it is (esptool's ROM-loader detection). A mismatch is refused before
anything is erased or written, and the chip is reset back to its firmware.
Exercising this needs an ESP32 ROM bootloader: tests use a named fake ROM loader
or are marked `hardware`.
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path
from typing import Callable

from .board import _lock_probe
from .errors import BadImage, FlashFailed, NoAnswer, WrongChip
from .ports import resolve

ESP_IMAGE_MAGIC = 0xE9


def chip_defs() -> dict:
    """esptool's chip classes by IMAGE_CHIP_ID: {0: ESP32ROM, 9: ESP32S3ROM, ...}."""
    from esptool.targets import CHIP_DEFS
    out = {}
    for cls in CHIP_DEFS.values():
        cid = getattr(cls, "IMAGE_CHIP_ID", None)
        if cid is not None:
            out.setdefault(cid, cls)
    return out


def image_chip(path: str) -> dict:
    """Read the image's header: {'chip': 'ESP32', 'chip_id': 0, 'offset': 0x1000, 'size': n}."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise BadImage(f"cannot read {path}: {e.strerror}", where=path) from None
    if len(data) < 24 or data[0] != ESP_IMAGE_MAGIC:
        raise BadImage(f"{path} is not an ESP firmware image (no 0xE9 header)", where=path,
                       hint="use the .bin from micropython.org/download for your board (not .uf2/.elf/.hex)")
    cid = int.from_bytes(data[12:14], "little")
    cls = chip_defs().get(cid)
    if cls is None:
        raise BadImage(f"{path} is built for an unknown chip id {cid}", where=path)
    return {"chip": cls.CHIP_NAME, "chip_id": cid, "offset": cls.BOOTLOADER_FLASH_OFFSET, "size": len(data)}


def detect_chip(port: str, connect_mode: str = "default-reset", attempts: int = 3) -> tuple[str, Callable[[], None]]:
    """(chip name, function that resets the chip back to its firmware) via esptool's ROM loader."""
    from esptool.cmds import detect_chip as _detect
    from esptool.util import FatalError
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            esp = _detect(port, connect_mode=connect_mode, connect_attempts=attempts)
    except (FatalError, OSError) as e:
        raise NoAnswer(f"no ESP ROM bootloader answered on {port}: {str(e).splitlines()[0]}", where=port,
                       hint="hold BOOT while pressing EN/RESET, or check it is an ESP32 board") from None

    def release() -> None:
        with contextlib.suppress(Exception), contextlib.redirect_stdout(io.StringIO()):
            esp.hard_reset()
            esp._port.close()
    return esp.CHIP_NAME, release


def flash(ui, port: str | None, image: str, *, chip: str | None = None, baud: int = 460800, erase: bool = False,
          connect_mode: str = "default-reset", serial_number: str | None = None, timeout: float = 10.0,
          detect: Callable = detect_chip, write: Callable | None = None) -> tuple[str, dict]:
    img = image_chip(image)
    if chip and chip.upper().replace("_", "-") != img["chip"]:
        raise WrongChip(f"{image} is built for {img['chip']}, but --chip says {chip}", where=image)
    port = resolve(port, serial_number=serial_number)
    _lock_probe(port)
    # esptool spends about a second per connect attempt (reset, sync, retries)
    found, release = detect(port, connect_mode, attempts=max(1, round(timeout)))
    if found != img["chip"]:
        release()
        raise WrongChip(f"the board is an {found}, but {os.path.basename(image)} is built for {img['chip']}",
                        where=port, hint=f"download the MicroPython image for {found}; nothing was written")
    release()
    (write or _esptool_write)(ui, port, image, img, baud, erase, connect_mode)
    what = "erased and written" if erase else "written"
    return (f"flash: {found} on {port}: {os.path.basename(image)} ({img['size'] / 1024:.0f} KB) {what} "
            f"at 0x{img['offset']:x} and verified",
            {"port": port, "chip": found, "image": image, "offset": img["offset"], "bytes": img["size"],
             "erased": erase})


def _esptool_write(ui, port, image, img, baud, erase, connect_mode) -> None:
    import esptool
    args = ["--chip", img["chip"].lower().replace("-", ""), "--port", port, "--baud", str(baud),
            "--before", connect_mode, "--after", "hard-reset"]
    if erase:
        args_erase = args + ["erase-flash"]
        _run_esptool(ui, esptool, args_erase)
    _run_esptool(ui, esptool, args + ["write-flash", "-z", f"0x{img['offset']:x}", image])


def _run_esptool(ui, esptool, argv) -> None:
    out = sys.stderr if ui.json else ui.out
    try:
        with contextlib.redirect_stdout(out):
            esptool.main(argv)
    except SystemExit as e:
        if e.code not in (0, None):
            raise FlashFailed(f"esptool {' '.join(argv[-3:])} failed (exit {e.code})", where=argv[3]) from None
    except Exception as e:
        raise FlashFailed(f"esptool failed: {e}", where=argv[3],
                          hint="run flash again; the ROM bootloader cannot be bricked by an interrupted write") from None
