# mypy: ignore-errors
# What of protocol/ goes onto a board (micropython-lib style; read by park-device and a frozen build).
# cpython.py (the gateway's cbor2 accelerator), names.py (words for humans), bundle.py (update images) and the host
# halves cose_host.py, messages_host.py, cobs_host.py (star-imported on CPython only) are host-only;
# keyfile.py is portable but no board reads a key file through it (start.py reads /key.bin).
metadata(description="park-edge wire protocol: framing, COSE_Mac0, replay window, CBOR messages", version="0.1.0")

package(
    "protocol",
    files=(
        "__init__.py",
        "cbor.py",
        "cobs.py",
        "codec.py",
        "codes.py",
        "cose.py",
        "crc16.py",
        "errors.py",
        "framing.py",
        "messages.py",
        "replay.py",
        "rules.py",
        "token.py",
    ),
    base_path="..",
)
