# /main.py on every park-edge board: picks the software slot once the board has taken an update
# (otaboot, before any package import), then reads /config.json, counts the boot and starts the role's App.
import os

try:
    os.stat("/ota/boot.json")
except OSError:
    pass
else:
    import otaboot

    otaboot.boot()

from common import start

start.main()
