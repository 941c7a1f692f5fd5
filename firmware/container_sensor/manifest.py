# mypy: ignore-errors
# The waste-container fill sensor (micropython-lib style; read by park-device and a frozen build).
metadata(description="park-edge waste-container fill sensor", version="1.0.0")

require("common")

package(
    "container_sensor",
    files=(
        "__init__.py",
        "app.py",
        "level.py",
        "ultrasonic.py",
    ),
    base_path="..",
)
