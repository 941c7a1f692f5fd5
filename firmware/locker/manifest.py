# mypy: ignore-errors
# The smart locker (micropython-lib style; read by park-device and a frozen build).
metadata(description="park-edge smart locker", version="1.0.0")

require("common")

package(
    "locker",
    files=(
        "__init__.py",
        "access.py",
        "app.py",
        "audit.py",
        "compartment.py",
        "flash.py",
        "reader.py",
        "setup.py",
        "usedids.py",
    ),
    base_path="..",
)
