"""Boot counter and fast-reboot detection: the way into safe mode.

Every reset (not a deep-sleep wake) counts a boot and a "fast" boot; a run that
stays healthy for stable_s, finishes a sleep cycle or reboots on purpose clears
the fast count. More than safe_boots fast boots in a row means something in the
normal path crashes the device: it then runs only its safe behaviour and the link.
"""

from protocol.codes import CAUSE_DEEPSLEEP


class BootCount:
    def __init__(self, store, cause, safe_boots, count=True):
        self._store = store
        st = store.get("boot")
        if type(st) is not dict:
            st = {"n": 0, "fast": 0}
        self.boots = st.get("n", 0)
        self.fast = st.get("fast", 0)
        self.cause = cause
        if count and cause != CAUSE_DEEPSLEEP:
            self.boots += 1
            self.fast += 1
            self._save()
        self.safe = self.fast > safe_boots
        self.stable = self.fast == 0

    def _save(self):
        self._store.put("boot", {"n": self.boots, "fast": self.fast})

    def mark_stable(self):
        """This run proved healthy: the next reset is not part of a crash loop."""
        if self.fast:
            self.fast = 0
            self._save()
        self.stable = True
