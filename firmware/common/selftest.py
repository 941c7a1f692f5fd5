"""The App's selftest() on the real pins, for a technician at the console (park-device selftest).

Imported only on that rare path (common.runtime.selftest imports it lazily), so
its code costs no heap on a board in service.
"""

from protocol.codes import CAUSE_SOFT

from common import config
from common.link import Link
from common.runtime import Runtime
from common.start import KEY_PATH, load_app, read_key
from common.store import Store


class _Recorder(Link):
    """A link that keeps what would have been sent (self tests must not talk to the gateway)."""

    def __init__(self):
        self.sent = bytearray()

    def read(self):
        return None

    def write(self, data):
        self.sent.extend(data)


def run(config_path=config.PATH, key_path=KEY_PATH):
    """With the main loop stopped: no boot counted, no watchdog, nothing sent to the gateway."""
    dev = config.load(config_path)
    rt = Runtime(dev, read_key(key_path), Store(), load_app(dev.role), cause=CAUSE_SOFT,
                 transport=_Recorder(), count_boot=False)
    rt.app = rt.app_cls(rt)
    rt.app.start(False)
    return rt.app.selftest()
