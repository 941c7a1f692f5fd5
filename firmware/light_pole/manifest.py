# mypy: ignore-errors
# The motion-controlled path light (micropython-lib style; read by park-device and a frozen build).
metadata(description="park-edge motion-controlled path light", version="1.0.0")

require("common")

package(
    "light_pole",
    files=(
        "__init__.py",
        "app.py",
        "control.py",
        "curve.py",
        "setup.py",
    ),
    base_path="..",
)
