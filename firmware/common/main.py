# /main.py on every park-edge board: reads /config.json, counts the boot and starts the role's App.
import os

try:
    os.stat("/ota/boot.json")
except OSError:
    pass
else:  # the board has taken an update: otaboot picks the slot before any package is imported
    os.chdir("/lib/common")  # otaboot as a top-level module ('' on sys.path): `common` stays unbound
    import otaboot  # type: ignore[import-not-found]  # /lib/common/otaboot, found through the working directory

    os.chdir("/")
    otaboot.boot()

from common import start

start.main()
