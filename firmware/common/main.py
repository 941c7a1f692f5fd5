# /main.py on every park-edge board: boots from /config.json (common.start), drops the boot-only
# code from the heap, then runs the Runtime's loop (common.runtime.serve).
from common import start

rt = start.main()
del start
from common.runtime import serve  # noqa: E402

serve(rt)
