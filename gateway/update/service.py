"""The gateway's update service: signed bundles in, rollouts per role and site, canaries first.

A rollout offers its bundle to each device of one role at one site (SPEC 10): canary
devices first, the rest only once every canary reported `valid`. It halts by itself
when a canary is refused, rolls back or makes no progress within a bound, and when any
other device rolls back or stalls; an operator halts, resumes and aborts it. Each
device's transfer is one task: offer, chunks from the device's own offset, commit,
then the trial's outcome from the device's `update` reports. Chunks go out one at a
time, only while no other command waits for that device, within a byte rate per link
and to at most `per_link` devices per link at once, so pre-light and unlock keep
their latency. Every step is an event (the bus and `park/<site>/device/<id>/event/update`),
and each rollout's state is retained on `park/<site>/gateway/update`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import Any, Callable

from protocol import bundle as pbundle
from protocol import codes, names
from protocol.codes import UPD_CHUNK_MAX
from protocol.messages import ROLE_IDS

from gateway.downlink import CommandFailed
from gateway.seams import Devices, UpdateLink
from gateway.update.config import UpdateConfig
from gateway.update.store import Store

log = logging.getLogger("park.update")

TICK_S = 1.0
OFFER_QUEUE_S = 86400.0  # an offer waits this long for a sleeping device (a BLE pool connects it when it wakes)
REPORT_WAIT_S = 10.0  # for the device's `update` after an answered offer or the last chunk
TRIAL_ASK_S = 15.0  # a device in its trial is asked where it stands this often (its report may be lost)
FINAL = frozenset(("valid", "current", "refused", "rolled_back", "failed", "aborted"))
BAD = frozenset(("refused", "rolled_back", "failed"))
_STATE = {codes.US_RECEIVING: "receiving", codes.US_STAGED: "staged", codes.US_TRIAL: "trial",
          codes.US_VALID: "valid", codes.US_ROLLED_BACK: "rolled_back", codes.US_REFUSED: "refused",
          codes.US_ABORTED: "aborted"}


class UpdateError(Exception):
    """An update request refused; `code` is a stable word (bad_request, unknown_bundle, refused, ...)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class Target:
    """One device of a rollout, in memory (the store keeps state, bytes and reason)."""

    __slots__ = ("device", "uid", "canary", "state", "bytes", "reason", "detail", "idle", "mark", "task", "changed")

    def __init__(self, row: dict):
        self.device = row["device"]
        self.uid = row["uid"]
        self.canary = bool(row["canary"])
        self.state = row["state"]
        self.bytes = row["bytes"]
        self.reason = row["reason"]
        self.detail = row["detail"]
        self.idle = 0.0  # s reachable without progress
        self.mark = (0, 0)  # the furthest (stage, bytes) reached: only going beyond it is progress
        self.task: asyncio.Task | None = None
        self.changed = asyncio.Event()

    def info(self, size: int) -> dict:
        return {"device": self.device, "canary": self.canary, "state": self.state, "bytes": self.bytes,
                "size": size, "reason": self.reason or None, "detail": self.detail or None}


class Rollout:
    __slots__ = ("id", "bundle", "site", "role", "state", "reason", "targets", "image", "size", "created")

    def __init__(self, row: dict, bundle: dict, targets: list[Target]):
        self.id = row["id"]
        self.site = row["site"]
        self.role = row["role"]
        self.state = row["state"]
        self.reason = row["reason"]
        self.created = row["created"]
        self.bundle = bundle
        self.image: bytes = bundle.get("data", b"")  # only for rollouts that run
        self.size = bundle["meta"]["size"]
        self.targets = {t.device: t for t in targets}

    def counts(self) -> dict:
        out: dict = {}
        for t in self.targets.values():
            out[t.state] = out.get(t.state, 0) + 1
        return out

    def info(self) -> dict:
        b = self.bundle
        return {"rollout": self.id, "bundle": b["id"], "role": self.role, "site": self.site,
                "version": pbundle.version_text(b["fw"]), "fw": b["fw"], "state": self.state,
                "reason": self.reason or None, "created": self.created, "counts": self.counts(),
                "devices": [t.info(self.size) for t in self.targets.values()]}


class UpdateService:
    """Owns the update store and every running rollout; a Stage in front of the control loops."""

    def __init__(self, cfg: UpdateConfig, devices: Devices, link: UpdateLink, uplink: Any = None,
                 publish: Callable[[dict], None] | None = None, clock: Callable[[], float] = time.time):
        self.cfg = cfg
        self.devices = devices
        self.link = link
        self.uplink = uplink
        self.publish = publish or (lambda ev: None)
        self.clock = clock
        self._store: Store | None = None
        self.rollouts: dict[int, Rollout] = {}
        self._by_device: dict[str, tuple[Rollout, Target]] = {}
        self._active: dict[str, set] = {}  # link name -> devices receiving chunks now
        self._slot_free = asyncio.Condition()
        self._next_send: dict[str, float] = {}  # link name -> loop time the next chunk may go
        self._loaded = False

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.cfg.store)
        return self._store

    def close(self) -> None:
        for ro in self.rollouts.values():
            self._stop_tasks(ro)
        if self._store is not None:
            self._store.close()
            self._store = None

    # -- the stage (seams.Stage): reports from devices

    def on_message(self, s, msg: dict, now: float) -> None:
        if msg["type"] != "update":
            return
        hit = self._by_device.get(s.id)
        if hit is None or hit[1].uid != msg["uid"]:
            return  # a report about another (older) update: nothing to do
        ro, t = hit
        state = _STATE.get(msg["state"])
        if state is None or t.state in FINAL:
            return
        if state == "refused" and msg["reason"] == codes.UR_BUSY:
            return  # installing, or in a trial: nothing changed; the offer is asked again later
        _progress(t, state, msg["off"])
        reason = names.UPDATE_REASONS.get(msg["reason"], "code_%d" % msg["reason"]) if msg["reason"] else ""
        if state == "receiving":
            t.bytes = msg["off"]
            if t.state != "receiving":
                self._set(ro, t, "receiving")
        elif state == "valid":
            if ro.bundle["kind"] == codes.UK_APP and s.fw is not None and s.fw != ro.bundle["fw"]:
                self._set(ro, t, "failed", "version", "valid, but the device reports %s, not %s"
                          % (pbundle.version_text(s.fw), pbundle.version_text(ro.bundle["fw"])))
            else:
                t.bytes = ro.size
                if ro.bundle["kind"] == codes.UK_APP:  # the floor is an app version; a runtime's is not one
                    self.store.raise_floor(t.device, ro.bundle["floor"])
                self._set(ro, t, "valid")
        elif state in ("refused", "rolled_back"):
            self._set(ro, t, state, reason or "unknown")
        elif state == "aborted":
            self._set(ro, t, "aborted", "operator" if ro.state == "aborted" else "device")
        elif state in ("staged", "trial"):
            self._set(ro, t, state)
        t.changed.set()
        self._after_change(ro, t)

    def on_hello(self, s) -> None:
        hit = self._by_device.get(s.id)
        if hit is not None:
            hit[1].changed.set()  # a device back from sleep or a reboot: its task asks where it stands

    def on_online(self, s, online: bool) -> None:
        pass

    # -- operations (CLI, API, backbone)

    def import_bundle(self, data: bytes, name: str = "") -> dict:
        """Verify against [update] release_keys and store; a refusal is recorded with its reason."""
        return import_into(self.store, self.cfg, data, name)

    def plan(self, bundle_id: int, site: str, canary: int | None = None, devices: list[str] | None = None) -> dict:
        b = self.store.bundle(bundle_id, with_image=True)
        what = "plan bundle %s at %s" % (bundle_id, site)
        if b is None:
            raise UpdateError("unknown_bundle", "no bundle %r (`park-gateway update status` lists them)" % bundle_id)
        role = b["role"]
        if devices:
            for did in devices:
                s = self.devices.get(did)
                if s is None:
                    raise UpdateError("unknown_device", "no device %r" % did)
                if s.role != role or s.site != site:
                    raise self._refuse(what, "role", "device %s is a %s at %s; bundle %d is for %s at %s"
                                       % (did, s.role, s.site, bundle_id, role, site))
            chosen = [self.devices[d] for d in devices]
        else:
            chosen = sorted((s for s in self.devices.values() if s.role == role and s.site == site),
                            key=lambda s: s.id)
        if not chosen:
            raise self._refuse(what, "no_devices", "no %s at site %r" % (role, site))
        busy = [s.id for s in chosen if s.id in self._by_device]
        if busy:
            raise UpdateError("busy", "%s already in rollout %d (halt or abort it first)"
                              % (", ".join(busy), self._by_device[busy[0]][0].id))
        refuse = {}  # what the gateway refuses itself: nothing is sent to these
        app = b["kind"] == codes.UK_APP  # hello's fw and the floor are app versions: a runtime bundle's fw is MicroPython's
        for s in chosen:
            if app and self.store.floor(s.id) > b["fw"]:
                refuse[s.id] = ("downgrade", "%s is below the floor %s this device already passed"
                                % (pbundle.version_text(b["fw"]), pbundle.version_text(self.store.floor(s.id))))
            elif b["kind"] == codes.UK_RUNTIME and not (s.caps or 0) & codes.CAP_OTA_IMAGE:
                refuse[s.id] = ("kind", "the device has no OTA partitions (no CAP_OTA_IMAGE in its hello)")
        if len(refuse) == len(chosen):
            reason, detail = next(iter(refuse.values()))
            raise self._refuse(what, reason, "%s: %s" % (", ".join(refuse), detail))
        n = self.cfg.canary if canary is None else canary
        order = sorted(chosen, key=lambda s: (not s.online, s.id))  # canaries: devices that answer now
        canaries = set([s.id for s in order if s.id not in refuse and not (app and s.fw == b["fw"])][:n])
        rid = self.store.add_rollout(bundle_id, site, role, [(s.id, _uid(), s.id in canaries) for s in order], n)
        ro = self._load(_found(self.store.rollout(rid)))
        for s in order:
            t = ro.targets[s.id]
            if s.id in refuse:
                self._set(ro, t, "refused", refuse[s.id][0], refuse[s.id][1] + "; nothing was sent")
            elif app and s.fw == b["fw"]:
                self._set(ro, t, "current", "", "already runs %s" % pbundle.version_text(b["fw"]))
        self._rollout_event(ro, "planned")
        self._schedule(ro)
        return ro.info()

    def halt(self, rid: int, reason: str = "operator") -> dict:
        ro = self._rollout(rid)
        if ro.state != "running":
            raise UpdateError("not_running", "rollout %d is %s" % (rid, ro.state))
        self._halt(ro, reason)
        return ro.info()

    def resume(self, rid: int) -> dict:
        ro = self._rollout(rid)
        if ro.state != "halted":
            raise UpdateError("not_halted", "rollout %d is %s, not halted" % (rid, ro.state))
        ro.state, ro.reason = "running", ""
        self.store.set_rollout(ro.id, "running")
        for t in ro.targets.values():
            t.idle = 0.0
        self._rollout_event(ro, "resumed")
        self._schedule(ro)
        return ro.info()

    def abort(self, rid: int) -> dict:
        ro = self._rollout(rid)
        if ro.state in ("aborted", "done"):
            raise UpdateError("not_running", "rollout %d is %s" % (rid, ro.state))
        ro.state, ro.reason = "aborted", "operator"
        self.store.set_rollout(ro.id, "aborted", "operator")
        self._stop_tasks(ro)
        for t in ro.targets.values():
            if t.state in ("offered", "receiving", "staged"):
                f = self.link.send(t.device, {"type": "update_abort", "uid": t.uid}, self.cfg.stall_s)
                f.add_done_callback(_quiet)
            if t.state not in FINAL and t.state != "trial":  # a trial ends on the device, as it must
                self._set(ro, t, "aborted", "operator")
        self._release(ro, keep_trials=True)  # their outcome still arrives and is shown
        self._rollout_event(ro, "aborted")
        return ro.info()

    def status(self, rid: int | None = None) -> dict:
        if rid is not None:
            return self._rollout(rid).info()
        self._restore()
        return {"bundles": [_bundle_info(b) for b in self.store.bundles()],
                "rollouts": [self._info(r) for r in self.store.rollouts()],
                "refused": self.store.refusals()}

    async def request(self, req: dict, site: str | None = None) -> dict:
        """One operation as the API and the backbone ask it: {"action": "status"|"plan"|..., ...}."""
        action = req.get("action")
        try:
            if action == "status":
                return self.status(_int(req, "rollout", None))
            if action == "plan":
                s = req.get("site", site)
                if site is not None and s != site:
                    raise UpdateError("bad_request", "a request at site %s plans only at %s" % (site, site))
                devices = req.get("devices")
                if devices is not None and (not isinstance(devices, list) or not all(isinstance(d, str) for d in devices)):
                    raise UpdateError("bad_request", "devices must be a list of device ids")
                if not isinstance(s, str):
                    raise UpdateError("bad_request", "plan needs a site")
                return self.plan(_int(req, "bundle"), s, _int(req, "canary", None), devices)
            if action in ("halt", "resume", "abort"):
                rid = _int(req, "rollout")
                if site is not None and self._rollout(rid).site != site:
                    raise UpdateError("unknown_rollout", "rollout %d is not at site %s" % (rid, site))
                return getattr(self, action)(rid)
            if action == "import":
                import base64
                try:
                    data = base64.b64decode(req.get("bundle", ""), validate=True)
                except (ValueError, TypeError):
                    raise UpdateError("bad_request", "bundle must be the bundle file in base64") from None
                return self.import_bundle(data, req.get("name") or "backbone")
        except pbundle.BundleError as e:
            raise UpdateError(e.code, e.why) from None
        raise UpdateError("bad_request", "update actions: status, import, plan, halt, resume, abort; got %r" % action)

    # -- running

    async def run(self) -> None:
        """Restore unfinished rollouts, then watch progress once a second until cancelled."""
        self._restore()
        for ro in list(self.rollouts.values()):
            self._schedule(ro)
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(TICK_S)
            now = loop.time()
            try:
                self._watch(now - last)
            except Exception:  # noqa: BLE001 - a bug here must not stop the gateway; logged loudly
                log.exception("update watch failed")
            last = now

    def _watch(self, dt: float) -> None:
        """A device reachable this long without progress has failed its check (a sleeping one is not counted)."""
        for ro in list(self.rollouts.values()):
            for t in ro.targets.values():
                if t.state in FINAL or ro.state != "running" and t.state != "trial":
                    continue
                if self.link.reachable(t.device):
                    t.idle += dt
                bound = self.cfg.trial_s if t.state == "trial" else self.cfg.stall_s
                if t.idle > bound:
                    self._set(ro, t, "failed", "no_progress", "no progress for %.0f s while reachable (%s)"
                              % (bound, t.state))
                    if t.task is not None:
                        t.task.cancel()
                    self._after_change(ro, t)

    def _schedule(self, ro: Rollout) -> None:
        if ro.state != "running":
            return
        ts = list(ro.targets.values())
        canaries_ok = all(t.state in ("valid", "current") for t in ts if t.canary)
        for t in ts:
            if t.state in FINAL or t.task is not None and not t.task.done():
                continue
            if t.canary or canaries_ok:
                t.task = asyncio.get_running_loop().create_task(self._drive(ro, t), name="update-" + t.device)
        if all(t.state in FINAL for t in ts):
            c = ro.counts()
            ro.state, ro.reason = "done", ", ".join("%d %s" % (n, k) for k, n in sorted(c.items()))
            self.store.set_rollout(ro.id, "done", ro.reason)
            self._release(ro)
            self._rollout_event(ro, "done")

    def _after_change(self, ro: Rollout, t: Target) -> None:
        if t.state not in FINAL:
            return
        if t.task is not None and t.task is not asyncio.current_task():
            t.task.cancel()
        self._by_device.pop(t.device, None)
        if ro.state == "running" and t.state in BAD and (t.canary or t.state != "refused"):
            self._halt(ro, "%s %s %s: %s" % ("canary" if t.canary else "device", t.device, t.state.replace("_", " "),
                                              t.detail or t.reason))
        else:
            self._schedule(ro)

    def _halt(self, ro: Rollout, reason: str) -> None:
        ro.state, ro.reason = "halted", reason
        self.store.set_rollout(ro.id, "halted", reason)
        self._stop_tasks(ro)
        log.warning("rollout %d halted: %s", ro.id, reason)
        self._rollout_event(ro, "halted")

    def _stop_tasks(self, ro: Rollout) -> None:
        for t in ro.targets.values():
            if t.task is not None and t.task is not asyncio.current_task():
                t.task.cancel()
            t.task = None

    def _release(self, ro: Rollout, keep_trials: bool = False) -> None:
        for d, (r, t) in list(self._by_device.items()):
            if r is ro and not (keep_trials and t.state == "trial"):
                del self._by_device[d]

    # -- one device's transfer

    async def _drive(self, ro: Rollout, t: Target) -> None:
        try:
            while t.state not in FINAL:
                t.changed.clear()
                if t.state in ("waiting", "offered"):
                    await self._offer(ro, t)
                elif t.state == "receiving":
                    await self._chunks(ro, t)
                elif t.state == "staged":
                    await self._commit(ro, t)
                elif not await self._changed(t, TRIAL_ASK_S):  # trial: valid or rolled_back comes as a report
                    await self._offer(ro, t)  # the same uid: a lost report is asked again; _watch bounds it
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - a bug fails this device, not the gateway
            log.exception("update of %s failed", t.device)
            self._set(ro, t, "failed", "internal", str(e))
            self._after_change(ro, t)

    async def _offer(self, ro: Rollout, t: Target) -> None:
        b = ro.bundle
        msg = {"type": "update_offer", "uid": t.uid, "kind": b["kind"], "role": ROLE_IDS[ro.role], "fw": b["fw"],
               "mpy": b["meta"]["mpy"], "size": len(ro.image), "sha": bytes.fromhex(b["sha"])}
        was = t.state
        try:
            await self.link.send(t.device, msg, OFFER_QUEUE_S)
        except CommandFailed as e:
            if e.code in ("unknown_type", "not_supported"):
                self._set(ro, t, "refused", "not_supported", "the device's firmware has no updates (%s)" % e.code)
                self._after_change(ro, t)
            elif e.code in ("unknown_device", "removed"):
                self._set(ro, t, "failed", "removed", str(e))
                self._after_change(ro, t)
            else:  # timeout (asleep or gone), busy: offered again
                await asyncio.sleep(1.0)
            return
        if t.state == was == "waiting":
            self._set(ro, t, "offered")
        await self._changed(t, REPORT_WAIT_S)

    async def _chunks(self, ro: Rollout, t: Target) -> None:
        link = self.link.link_name(t.device) or "-"
        async with self._slot(link, t.device):
            size = len(ro.image)
            while t.state == "receiving" and t.bytes < size:
                off = t.bytes
                data = ro.image[off:off + UPD_CHUNK_MAX]
                await self._pace(link, t.device, len(data))
                try:
                    await self.link.send(t.device, {"type": "update_chunk", "uid": t.uid, "off": off, "data": data},
                                         self.cfg.stall_s)
                except CommandFailed as e:
                    log.debug("chunk %d to %s: %s", off, t.device, e)
                    self._set(ro, t, "waiting")  # ask where it stands (the offer with the same uid)
                    return
                if t.state == "receiving" and t.bytes == off:
                    t.bytes = off + len(data)
                    _progress(t, "receiving", t.bytes)
        if t.state == "receiving":
            if not await self._changed(t, REPORT_WAIT_S):
                self._set(ro, t, "waiting")

    async def _commit(self, ro: Rollout, t: Target) -> None:
        try:
            await self.link.send(t.device, {"type": "update_commit", "uid": t.uid}, self.cfg.stall_s)
        except CommandFailed as e:
            if not await self._changed(t, REPORT_WAIT_S):  # an image refusal comes as a report
                log.info("commit to %s: %s; asking again", t.device, e)
                self._set(ro, t, "waiting")
            return
        if t.state == "staged":
            self._set(ro, t, "trial", "", "committed: rebooting into the new version")

    async def _changed(self, t: Target, timeout: float) -> bool:
        try:
            await asyncio.wait_for(t.changed.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    @contextlib.asynccontextmanager
    async def _slot(self, link: str, device: str):
        async with self._slot_free:
            await self._slot_free.wait_for(lambda: len(self._active.get(link, ())) < self.cfg.per_link)
            self._active.setdefault(link, set()).add(device)
        try:
            yield
        finally:
            self._active[link].discard(device)
            async with self._slot_free:
                self._slot_free.notify_all()

    async def _pace(self, link: str, device: str, n: int) -> None:
        """Behind every other command for this device, and within the link's byte rate."""
        while self.link.backlog(device):
            await asyncio.sleep(0.02)
        loop = asyncio.get_running_loop()
        now = loop.time()
        at = max(now, self._next_send.get(link, 0.0))
        self._next_send[link] = at + n / self.cfg.link_rate
        if at > now:
            await asyncio.sleep(at - now)

    # -- state, events, store

    def _set(self, ro: Rollout, t: Target, state: str, reason: str = "", detail: str = "") -> None:
        t.state, t.reason, t.detail = state, reason, detail
        self.store.set_target(ro.id, t.device, state, t.bytes, reason, detail)
        s = self.devices.get(t.device)
        body = {"rollout": ro.id, "bundle": ro.bundle["id"], "version": pbundle.version_text(ro.bundle["fw"]),
                "state": state, "bytes": t.bytes, "size": ro.size, "canary": t.canary,
                "reason": reason or None, "detail": detail or None}
        self.publish(dict(body, kind="update", device=t.device, site=ro.site))
        if self.uplink is not None and s is not None:
            now = self.clock()
            try:
                f = self.uplink.event_nowait(ro.site, t.device, "update", body,
                                             "%s-u%d-%s-%d" % (t.device, ro.id, state, int(now * 1000)), now)
                f.add_done_callback(_quiet)
            except Exception as e:  # noqa: BLE001 - the backbone's trouble never stops an update
                log.warning("update event for %s not queued: %s", t.device, e)

    def _rollout_event(self, ro: Rollout, step: str) -> None:
        info = ro.info()
        self.publish({"kind": "rollout", "step": step, "rollout": ro.id, "site": ro.site, "state": ro.state,
                      "reason": ro.reason or None})
        put = getattr(self.uplink, "site_state_nowait", None)
        if put is not None:
            body = {k: info[k] for k in ("rollout", "bundle", "role", "version", "state", "reason", "counts")}
            body.update(step=step, ts=self.clock())
            try:
                put(ro.site, "update", body).add_done_callback(_quiet)
            except Exception as e:  # noqa: BLE001
                log.warning("rollout state not queued: %s", e)

    def _refuse(self, what: str, code: str, reason: str) -> UpdateError:
        self.store.refused(what, code, reason)
        return UpdateError(code, reason)

    def _rollout(self, rid: int) -> Rollout:
        self._restore()
        ro = self.rollouts.get(rid)
        if ro is None:
            row = self.store.rollout(rid)
            if row is None:
                raise UpdateError("unknown_rollout", "no rollout %r" % rid)
            ro = self._load(row, keep=False)
        return ro

    def _info(self, row: dict) -> dict:
        ro = self.rollouts.get(row["id"])
        return ro.info() if ro is not None else self._load(row, keep=False).info()

    def _restore(self) -> None:
        if not self._loaded:
            self._loaded = True
            for row in self.store.rollouts(("running", "halted")):
                self._load(row)

    def _load(self, row: dict, keep: bool = True) -> Rollout:
        ro = Rollout(row, _found(self.store.bundle(row["bundle"], with_image=keep)),
                     [Target(r) for r in self.store.targets(row["id"])])
        if keep:
            self.rollouts[ro.id] = ro
            for t in ro.targets.values():
                if t.state not in FINAL:
                    self._by_device[t.device] = (ro, t)
                if t.state in ("offered", "receiving"):
                    t.state = "waiting"  # after a restart: ask the device where it stands before sending
        return ro


def import_into(store: Store, cfg: UpdateConfig, data: bytes, name: str = "") -> dict:
    """Verify a bundle against the configured release keys and store it (no daemon needed)."""
    try:
        b = pbundle.verify(data, cfg.keys)
    except pbundle.BundleError as e:
        store.refused("import %s" % (name or "bundle"), e.code, e.why)
        raise UpdateError(e.code, e.why) from None
    bid, new = store.add_bundle(b)
    return dict(_bundle_info(_found(store.bundle(bid))), new=new)


def _bundle_info(b: dict) -> dict:
    m = b["meta"]
    return {"bundle": b["id"], "role": b["role"], "kind": names.UPDATE_KINDS.get(b["kind"], b["kind"]),
            "version": pbundle.version_text(b["fw"]), "floor": pbundle.version_text(b["floor"]),
            "size": m["size"], "files": len(m.get("files", ())), "sha256": b["sha"], "key": b["key"],
            "created": m["created"], "imported": b["imported"]}


_STAGES = {"receiving": 1, "staged": 2, "trial": 3}


def _progress(t: Target, state: str, off: int) -> None:
    mark = (_STAGES.get(state, 4), off)
    if mark > t.mark:
        t.mark = mark
        t.idle = 0.0


def _found(row: dict | None) -> dict:
    if row is None:  # rows are never deleted: a missing one is a damaged store
        raise UpdateError("internal", "the update store lost a row it refers to")
    return row


def _uid() -> int:
    return secrets.randbelow(0xFFFFFFFF) + 1


def _int(req: dict, key: str, default: Any = ...) -> Any:
    v = req.get(key, default)
    if v is ...:
        raise UpdateError("bad_request", "%s is missing" % key)
    if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
        raise UpdateError("bad_request", "%s must be a non-negative integer, got %r" % (key, v))
    return v


def _quiet(f: asyncio.Future) -> None:
    if not f.cancelled() and f.exception() is not None:
        log.debug("update: %s", f.exception())
