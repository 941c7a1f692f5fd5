# /main.py on every park-edge board: boots from /config.json (common.start), drops the boot-only
# code from the heap, then runs the Runtime's loop (common.runtime.serve).
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

rt = start.main()
del start
from common.runtime import serve  # noqa: E402

serve(rt)
