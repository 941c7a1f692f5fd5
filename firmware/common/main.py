# /main.py on every park-edge board: reads /config.json, counts the boot and starts the role's App.
import os
import sys

try:
    os.stat("/ota/boot.json")
except OSError:
    pass
else:  # the board has taken an update: otaboot picks the slot before any package is imported
    sys.path.append("/lib/common")  # otaboot as a top-level module, so `common` is not bound to /lib yet
    import otaboot

    sys.path.pop()
    otaboot.boot()

from common import start

start.main()
