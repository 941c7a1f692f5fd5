// vboard VM worker: one boot of one virtual ESP32.
//
// Runs the genuine MicroPython WebAssembly VM in a worker thread. Each boot (power-on,
// deep-sleep wake, WDT/machine reset) gets a fresh worker, i.e. a fresh VM, exactly like
// RAM being lost on a real chip; the main thread (board.mjs) keeps what survives a reset:
// flash contents, the virtual clock, RTC, RTC memory and the peripheral inputs.
//
// Simulated here (the ESP32 hardware itself cannot exist in CI): pins, ADC, PWM, UART,
// WDT, sleep/reset, an ultrasonic echo and the timebase. Everything above the hardware
// is real MicroPython running the unmodified firmware.
import { parentPort, workerData } from "node:worker_threads";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { pathToFileURL } from "node:url";

const W = workerData;
// the npm package is installed once, in sim/mpvm (./dev setup runs npm ci there)
// PARK_VBOARD_VM: another build of the same port (micropython.mjs beside its .wasm), e.g. one with the
// firmware frozen in (benchmarks/frozen_vm.sh): its '.frozen' comes before /lib on the import path
const PKG = pathToFileURL(process.env.PARK_VBOARD_VM || path.join(path.dirname(new URL(import.meta.url).pathname), "..",
  "mpvm", "node_modules", "@micropython", "micropython-webassembly-pyscript", "micropython.mjs")).href;

// asyncio in the wasm port schedules its run loop with js.setTimeout(fn, 0), which Node
// clamps to >= 1 ms. Map zero delays to setImmediate so stepping a virtual day is fast.
// Zero-delay runs are counted: when none is pending (and no microtask queued one),
// every asyncio task is blocked on a virtual-clock promise or I/O, i.e. Python is idle.
const realSetTimeout = globalThis.setTimeout.bind(globalThis);
const realClearTimeout = globalThis.clearTimeout.bind(globalThis);
let pendingZero = 0;
globalThis.setTimeout = (fn, ms, ...args) => {
  if (ms > 0) return realSetTimeout(fn, ms, ...args);
  pendingZero++;
  const h = setImmediate(() => { if (!h._vbDone) { h._vbDone = true; pendingZero--; } fn(...args); });
  h._vbZero = true;
  return h;
};
globalThis.clearTimeout = (h) => {
  if (h && h._vbZero) { if (!h._vbDone) { h._vbDone = true; pendingZero--; } clearImmediate(h); }
  else realClearTimeout(h);
};

const post = (m) => parentPort.postMessage(m);
const sab = new Int32Array(new SharedArrayBuffer(4));
function blockRealMs(ms) { if (ms > 0) Atomics.wait(sab, 0, 0, ms); }

// ---------------------------------------------------------------------------- state
let dead = false;             // set once this boot is over (reset requested); Python is frozen
let vnow = W.now_ms;          // virtual ms since the board was created (stepped mode)
const bootAt = W.now_ms;
const realtime = !!W.realtime;
let rBase = performance.now(), vBase = vnow;
function nowV() { return realtime ? vBase + (performance.now() - rBase) : vnow; }

const inputs = W.inputs;      // {pins:{id:0/1}, adc:{id:{uv|u16}}, distance_mm, temperature_c}
const pinMode = {};           // id -> {mode, pull}
const pinOut = {};            // id -> 0/1 for outputs
const pinHighSince = {};      // id -> virtual ms when an output went high
const irqs = {};              // id -> {trigger, handler}
const pwm = {};               // id -> {freq, duty_u16}
const adcAtten = {};          // id -> atten index
const uartRx = {};            // id -> array of bytes
let lastTrigRise = null;      // virtual ms of the last rising edge on the ultrasonic trigger pin
let heapPeak = 0;
let waker = null;             // vclock._wake (a Python function)
let memAlloc = null;          // Python gc.mem_alloc (or live sampler)
let heapCheck = null;         // _vboard_boot._recheck on a board with a heap budget
let wdt = null;               // {timeout, at}
let timers = [];              // [{at, seq, resolve}] sorted by (at, seq)
let seq = 0;
let inRepl = false;           // stdout produced while the REPL runs goes to the console only
let rawRepl = false;
let mp = null;

function event(type, fields) { post({ t: "event", ev: Object.assign({ type, t_ms: Math.round(nowV()) }, fields || {}) }); }

// ---------------------------------------------------------------------------- output
let logBuf = [];
let conBuf = [];
let flushSched = false;
const dec = new TextDecoder();
function flushOut() {
  flushSched = false;
  if (conBuf.length) { post({ t: "console", b: Buffer.from(conBuf) }); conBuf = []; }
}
function sched() { if (!flushSched) { flushSched = true; setImmediate(flushOut); } }
let captured = null;          // text of a measurement the worker runs itself (qstrInfo), not console output
function onStdout(u8) {
  if (dead) return;
  if (captured !== null) { captured += dec.decode(Buffer.from(u8)); return; }
  for (const c of u8) {
    if (inRepl) { conBuf.push(c); continue; }
    if (!rawRepl) conBuf.push(c === 10 ? 10 : c);
    if (c === 10) {
      const line = dec.decode(Buffer.from(logBuf)).replace(/\r$/, "");
      logBuf = [];
      post({ t: "log", line, t_ms: Math.round(nowV()) });
    } else logBuf.push(c);
  }
  if (conBuf.length > 4096) flushOut(); else sched();
}

/** Names interned at run time and the bytes of their pools' arrays (micropython.qstr_info). */
function qstrInfo() {
  captured = "";
  try { mp.runPython("import micropython\nmicropython.qstr_info()"); } finally { var out = captured; captured = null; }
  const m = /n_qstr=(\d+), n_str_data_bytes=(\d+), n_total_bytes=(\d+)/.exec(out);
  if (!m) throw new Error("qstr_info gave no pool figures: " + out);
  return { names: Number(m[1]), arrays: Number(m[3]) - Number(m[2]) };
}

/** The arrays MicroPython 1.27 allocates for n names: pools of 20, 40, 80, ... entries of 7 bytes
 *  and a 24-byte header, in 16-byte blocks (py/qstr.c; benchmarks/bench_footprint.pool_bytes). */
function poolBytes(n) {
  let total = 0, alloc = 20, held = 0;
  while (held < n) { total += Math.ceil((7 * alloc + 24) / 16) * 16; held += alloc; alloc *= 2; }
  return total;
}
let simNames = 0;             // names the simulator's own modules interned (a chip interns the firmware's only)

// ---------------------------------------------------------------------------- clock
function addTimer(at, resolve) {
  const t = { at, seq: seq++, resolve };
  let i = timers.length;
  while (i > 0 && timers[i - 1].at > at) i--;
  timers.splice(i, 0, t);
  if (realtime) armReal();
  return t;
}
let realHandle = null;
function armReal() {
  if (realHandle) realClearTimeout(realHandle);
  realHandle = null;
  if (dead) return;
  let next = timers.length ? timers[0].at : Infinity;
  if (wdt) next = Math.min(next, wdt.at);
  if (next === Infinity) return;
  realHandle = realSetTimeout(() => { realHandle = null; fireDue(nowV()); armReal(); }, Math.max(0, next - nowV()));
}
// Resolve every timer due at or before `at`; return true if a WDT reset happened.
function fireDue(at) {
  if (wdt && wdt.at <= at) { wdtExpired(); return true; }
  while (timers.length && timers[0].at <= at) {
    const t = timers.shift();
    t.resolve(Math.round(nowV()));
  }
  return false;
}
function sampleHeap(v) {
  if (typeof v === "number" && v > heapPeak) { heapPeak = v; return; }
  if (memAlloc) { try { const a = memAlloc(); if (a > heapPeak) heapPeak = a; } catch (e) { /* VM busy */ } }
}
// Let Python run until no asyncio task is ready (stepped mode quiescence). Pure JS:
// a JS->Python call costs ~80 us, a setImmediate turn ~5 us.
async function settle() {
  for (let i = 0; i < 10000000; i++) {
    await new Promise((r) => setImmediate(r));
    if (dead) return;
    if (pendingZero === 0) {
      await Promise.resolve();
      if (pendingZero === 0) return;
    }
  }
}
let lastProgress = 0;       // the main thread's hang detector wants a sign of life
async function advanceTo(target) {
  if (realtime) throw new Error("advance() is only available in stepped mode (realtime=False)");
  for (;;) {
    let next = timers.length ? timers[0].at : Infinity;
    if (wdt) next = Math.min(next, wdt.at);
    if (next > target) break;
    vnow = Math.max(vnow, next);
    if (fireDue(vnow)) return;
    await settle();
    if (dead) return;
    const r = performance.now();
    if (r - lastProgress > 200) { lastProgress = r; post({ t: "progress", now_ms: vnow }); }
  }
  vnow = Math.max(vnow, target);
  await settle();
  sampleHeap();
}

// ---------------------------------------------------------------------------- flash
const SYS_DIRS = new Set(["tmp", "home", "dev", "proc", "_vmachine"]);
let flashSeen = new Map();   // path -> "mtime:size" or "dir"
function flashScan() {
  const FS = mp.FS;
  const out = new Map();
  const walk = (dir) => {
    for (const name of FS.readdir(dir)) {
      if (name === "." || name === "..") continue;
      const p = (dir === "/" ? "" : dir) + "/" + name;
      if (dir === "/" && SYS_DIRS.has(name) && !W.flashTop.includes(name)) continue;
      const st = FS.stat(p);
      if (FS.isDir(st.mode)) { out.set(p, "dir"); walk(p); }
      else if (FS.isFile(st.mode)) out.set(p, `${st.mtime.getTime ? st.mtime.getTime() : st.mtime}:${st.size}`);
    }
  };
  walk("/");
  return out;
}
// Changes since the last call: {files:{path:bytes}, dirs:[..], deleted:[..]} or null.
function flashDiff(full) {
  if (!mp) return null;
  const cur = flashScan();
  const files = {}, dirs = [], deleted = [];
  let any = false;
  for (const [p, sig] of cur) {
    if (!full && flashSeen.get(p) === sig) continue;
    any = true;
    if (sig === "dir") dirs.push(p); else files[p] = mp.FS.readFile(p);
  }
  for (const p of flashSeen.keys()) if (!cur.has(p)) { deleted.push(p); any = true; }
  flashSeen = cur;
  return any || full ? { files, dirs, deleted } : null;
}
function syncFlash() { const d = flashDiff(false); if (d) post({ t: "flash", diff: d }); }

// ---------------------------------------------------------------------------- resets
function halt() {
  // This boot is over: freeze Python the way a chip stops executing, until the main
  // thread terminates the worker. Atomics.wait keeps the CPU idle; terminate() ends it.
  for (;;) Atomics.wait(sab, 0, 0, 50);
}
function requestReset(cause, extra) {
  if (dead) return;
  let diff = null;
  try { diff = flashDiff(false); } catch (e) { /* fs unreadable: keep the last snapshot */ }
  flushOut();
  if (logBuf.length) { post({ t: "log", line: dec.decode(Buffer.from(logBuf)), t_ms: Math.round(nowV()) }); logBuf = []; }
  dead = true;
  if (realHandle) realClearTimeout(realHandle);
  post(Object.assign({ t: "reset", cause, now_ms: nowV(), heap_peak: heapPeak, flash: diff }, extra || {}));
}
function wdtExpired() {
  event("wdt_expired", { timeout_ms: wdt.timeout });
  const at = wdt.at;
  vnow = Math.max(vnow, at);
  requestReset("wdt");
}

// ---------------------------------------------------------------------------- JS API for machine.py / vclock.py
const API = {
  // clock
  ticks_ms: () => Math.floor(nowV() - bootAt) & 0x3fffffff,
  ticks_us: () => Math.floor((nowV() - bootAt) * 1000) & 0x3fffffff,
  // unix ms cross the boundary as strings: JS integers convert to 32-bit Python ints
  unix_ms: () => String(Math.floor(W.rtc_offset_ms + nowV())),
  set_unix_ms(ms) { W.rtc_offset_ms = Number(ms) - nowV(); post({ t: "rtc", rtc_offset_ms: W.rtc_offset_ms }); },
  set_waker(fn) { waker = fn; },
  // _vboard_boot's heap guard found the budget exceeded inside a task step: measure again from
  // the event loop (a zero timeout, so settle() waits for it)
  // the pools' arrays as a chip would have them for the firmware's names alone: the simulator's
  // names can take a board past a pool the chip never allocates (a locker: 9 KiB)
  heap_recheck() {
    setTimeout(() => {
      if (dead || !heapCheck) return;
      const q = qstrInfo();
      heapCheck(q.arrays - poolBytes(q.names - simNames));
    }, 0);
  },
  sleep_at(n, ms, heap) {
    // vclock's sleepers: call waker(n) at the deadline (see vclock.py for why not a promise)
    sampleHeap(heap);
    if (dead) return;
    addTimer(nowV() + Math.max(0, ms), () => { if (!dead && waker) waker(n); });
  },
  sleep(ms, heap) {
    sampleHeap(heap);
    if (dead) return new Promise(() => {});
    return new Promise((resolve) => addTimer(nowV() + Math.max(0, ms), resolve));
  },
  busy_sleep(ms) {
    // A blocking sleep: nothing else runs. Stepped mode jumps the clock; realtime blocks.
    if (ms <= 0) return;
    if (realtime) blockRealMs(ms); else vnow += ms;
  },
  // pins
  pin_init(id, mode, pull, value) {
    pinMode[id] = { mode, pull };
    if (mode === "out" || mode === "od") { if (value !== null && value !== undefined) API.pin_write(id, value); else if (!(id in pinOut)) pinOut[id] = 0; }
    post({ t: "pinmode", id, mode, pull });
  },
  pin_read(id) {
    const m = pinMode[id];
    if (m && (m.mode === "out")) return pinOut[id] || 0;
    if (id in inputs.pins) return inputs.pins[id] ? 1 : 0;
    if (m && m.pull === "up") return 1;
    return 0;
  },
  pin_write(id, v) {
    v = v ? 1 : 0;
    const old = pinOut[id] || 0;
    pinOut[id] = v;
    if (old === v) return;
    const t = nowV();
    const isTrig = W.ultrasonic && W.ultrasonic.trig === id;
    if (v) { if (isTrig) lastTrigRise = t; else pinHighSince[id] = t; }
    post({ t: "pinout", id, v, t_ms: Math.round(t) });
    if (!v && pinHighSince[id] !== undefined) {
      event("pulse", { pin: id, ms: Math.round((t - pinHighSince[id]) * 1000) / 1000 });
      delete pinHighSince[id];
    }
  },
  pin_irq(id, trigger, handler) { if (handler) irqs[id] = { trigger, handler }; else delete irqs[id]; },
  // ADC: inputs in microvolts or raw u16; full-scale per attenuation like the ESP32's ADC1
  adc_atten(id, a) { adcAtten[id] = a; },
  adc_read_uv(id) {
    const fs = [950000, 1250000, 1750000, 3100000][adcAtten[id] ?? 3];
    const v = inputs.adc[id];
    if (!v) return 0;
    if (v.uv !== undefined) return Math.max(0, Math.min(fs, Math.round(v.uv)));
    return Math.round(v.u16 / 65535 * fs);
  },
  adc_read_u16(id) {
    const fs = [950000, 1250000, 1750000, 3100000][adcAtten[id] ?? 3];
    const v = inputs.adc[id];
    if (!v) return 0;
    if (v.u16 !== undefined) return Math.max(0, Math.min(65535, Math.round(v.u16)));
    return Math.max(0, Math.min(65535, Math.round(v.uv / fs * 65535)));
  },
  // PWM
  pwm_set(id, freq, duty) {
    const old = pwm[id] || {};
    pwm[id] = { freq, duty_u16: duty };
    if (old.freq !== freq || old.duty_u16 !== duty) post({ t: "pwm", id, freq, duty_u16: duty, t_ms: Math.round(nowV()) });
  },
  pwm_deinit(id) { delete pwm[id]; post({ t: "pwm", id, freq: 0, duty_u16: null, t_ms: Math.round(nowV()) }); },
  // UART (hex strings cross the boundary: bytes do not convert to JS)
  uart_write(id, hex) { if (!dead) post({ t: "uart_tx", id, b: Buffer.from(hex, "hex") }); return hex.length / 2; },
  uart_any(id) { return (uartRx[id] || []).length; },
  uart_read(id, n) {
    const q = uartRx[id] || [];
    const k = n < 0 ? q.length : Math.min(n, q.length);
    return Buffer.from(q.splice(0, k)).toString("hex");
  },
  // ultrasonic echo: round trip time of sound at the simulated air temperature
  pulse_us(id, level, timeout) {
    const u = W.ultrasonic;
    if (u && u.trig !== undefined && lastTrigRise === null) return -1;   // never triggered
    lastTrigRise = null;
    const d = inputs.distance_mm;
    if (d === null || d === undefined || level !== 1) return -1;
    const c = 331.3 + 0.606 * (inputs.temperature_c ?? 20);               // m/s
    const us = Math.round(2 * (d / 1000) / c * 1e6);
    if (timeout >= 0 && us > timeout) return -2;
    return us;
  },
  // watchdog / sleep / reset
  wdt_start(timeout) { wdt = { timeout, at: nowV() + timeout }; event("wdt_start", { timeout_ms: timeout }); if (realtime) armReal(); },
  wdt_feed() { if (!wdt) return; wdt.at = nowV() + wdt.timeout; event("wdt_feed"); if (realtime) armReal(); },
  lightsleep(ms) {
    event("lightsleep", { ms: ms < 0 ? null : ms });
    if (ms > 0) API.busy_sleep(ms);
  },
  deepsleep(ms) { event("deepsleep", { ms: ms < 0 ? null : ms }); requestReset("deepsleep", { sleep_ms: ms < 0 ? null : ms }); halt(); },
  reset(kind) { requestReset(kind === "soft" ? "soft" : "hard"); halt(); },
  reset_cause: () => W.reset_cause,
  wake_reason: () => W.wake_reason,
  unique_id: () => W.uid,
  rtc_memory(hex) { if (hex === undefined || hex === null) return W.rtc_mem; W.rtc_mem = hex; post({ t: "rtc_mem", hex }); return hex; },
  event(type, json) { event("fw_" + type, json ? JSON.parse(json) : {}); },
  // BLE controller (bluetooth.py): the central is on the host, reached through the main thread
  ble_set_handler(fn) { bleHandler = fn; },
  ble_active(on) { if (!dead) { event("ble_radio", { on: !!on }); post({ t: "ble", k: on ? "on" : "off" }); } },
  ble_pref_mtu(m) { if (!dead) post({ t: "ble", k: "pref_mtu", arg: m }); },
  ble_adv(hex) { if (!dead) post({ t: "ble", k: "adv", hex: hex === null || hex === undefined ? null : hex }); },
  ble_notify(conn, uuid, hex) { if (!dead) post({ t: "ble", k: "notify", conn, uuid, hex }); },
  ble_disconnect(conn) { if (!dead) post({ t: "ble", k: "disconnect", conn }); },
  // Wi-Fi station (network.py) and TCP sockets (socket.py) to the host's gateway address
  wifi_active(v) {
    if (v === -1) return wifi.active ? 1 : 0;
    wifi.active = !!v;
    if (!wifi.active) { wifiDrop(1000); }
    return v;
  },
  wifi_connect(ssid, key) {
    const gen = ++wifi.gen;
    wifi.status = 1001;
    addTimer(nowV() + WIFI_JOIN_MS, () => {
      if (dead || gen !== wifi.gen) return;
      const ap = W.wifi;
      if (!ap || !ap.up || ap.ssid !== ssid) wifi.status = 201;
      else if (ap.psk !== key) wifi.status = 202;
      else wifi.status = 1010;
      event("wifi", { status: wifi.status, ssid });
    });
  },
  wifi_disconnect() { wifi.gen++; wifiDrop(1000); },
  wifi_status: () => wifi.status,
  sock_open(host, port) {
    if (wifi.status !== 1010) return -113;           // EHOSTUNREACH
    const id = ++sockSeq;
    const s = { rx: [], state: 0, err: 0, c: null };
    socks.set(id, s);
    event("wifi_tcp", { host, port });
    const gw = W.wifi && W.wifi.gateway;
    if (!gw) { s.state = 3; s.err = 111; return id; }
    const c = net.connect({ host: gw[0], port: gw[1] });
    s.c = c;
    c.setNoDelay(true);
    c.on("connect", () => { if (s.state === 0) s.state = 1; });
    c.on("data", (d) => { for (const x of d) s.rx.push(x); });
    c.on("end", () => { if (s.state < 2) s.state = 2; });
    c.on("close", () => { if (s.state < 2) s.state = 2; });
    c.on("error", (e) => { s.state = 3; s.err = e.code === "ECONNREFUSED" ? 111 : 104; });
    return id;
  },
  sock_poll(id) {
    const s = socks.get(id);
    if (!s) return 32;                                // POLLNVAL
    let f = 0;
    if (s.state === 1) f |= 4;                         // POLLOUT
    if (s.rx.length || s.state >= 2) f |= 1;           // POLLIN (data or end of stream)
    if (s.state === 2) f |= 16;                        // POLLHUP
    if (s.state === 3) f |= 8;                         // POLLERR
    return f;
  },
  sock_send(id, hex) {
    const s = socks.get(id);
    if (!s) return -9;                                // EBADF
    if (s.state === 0) return -11;                     // EAGAIN: still connecting
    if (s.state !== 1) return -(s.err || 104);
    if (s.c.writableLength > 65536) return -11;
    s.c.write(Buffer.from(hex, "hex"));
    return hex.length / 2;
  },
  sock_recv(id, n) {
    const s = socks.get(id);
    if (!s) return "!9";
    if (s.rx.length) return Buffer.from(s.rx.splice(0, Math.max(1, n))).toString("hex");
    if (s.state === 2) return "!";
    if (s.state === 3) return "!" + (s.err || 104);
    return "";
  },
  sock_close(id) { const s = socks.get(id); if (s) { if (s.c) s.c.destroy(); socks.delete(id); } },
};
// Wi-Fi and sockets of this boot (a reset drops them, as RAM and the radio are lost)
const WIFI_JOIN_MS = 2000;
const wifi = { active: false, status: 1000, gen: 0 };
const socks = new Map();
let sockSeq = 0;
let bleHandler = null;
function wifiDrop(status) {
  if (wifi.status === 1010 || wifi.status === 1001) wifi.status = status;
  for (const [, s] of socks) { if (s.c) s.c.destroy(); if (s.state < 2) { s.state = 3; s.err = 104; } }
}

// ---------------------------------------------------------------------------- host messages
function fireIrq(id, old, v) {
  // trigger bits as in the ESP32 port: Pin.IRQ_RISING = 1, Pin.IRQ_FALLING = 2
  const q = irqs[id];
  if (!q || old === v || dead) return;
  const rising = !old && v;
  if (rising && !(q.trigger & 1)) return;
  if (!rising && !(q.trigger & 2)) return;
  try { q.handler(id); } catch (e) { event("irq_error", { pin: id, error: String(e.message || e) }); }
}

// Console bytes -> the VM's event-driven REPL. Returns true if this boot ended.
// Raw-paste (Ctrl-E 'A' Ctrl-A) is answered "R\x00" (understood, not supported) so
// mpremote falls back to plain raw-REPL writes; the wasm REPL has no raw-paste mode.
let rawLineEmpty = false;
let pasteProbe = 0;
function consoleChar(c) {
  if (rawRepl && pasteProbe === 0 && rawLineEmpty && c === 5) { pasteProbe = 1; return false; }
  if (pasteProbe === 1) { if (c === 0x41) { pasteProbe = 2; return false; } pasteProbe = 0; }
  if (pasteProbe === 2) {
    pasteProbe = 0;
    if (c === 1) { conBuf.push(0x52, 0x00); return false; }
  }
  inRepl = true;
  let r = 0;
  try { r = mp.replProcessChar(c); } finally { inRepl = false; }
  if (dead) return true;
  if (c === 1) { rawRepl = true; rawLineEmpty = true; }
  else if (c === 2) rawRepl = false;
  else if (c === 4 || c === 3) rawLineEmpty = true;
  else rawLineEmpty = false;
  if (r) {                     // Ctrl-D on an empty line: a soft reset request
    event("soft_reset_request", { action: W.console_soft_reset });
    if (W.console_soft_reset === "reboot") { requestReset("soft"); return true; }
    // Firmware keeps running: only the REPL restarts, as mpremote expects.
    inRepl = true;
    try { onStdout(Buffer.from("MPY: soft reboot\r\n")); mp.replInit(); } finally { inRepl = false; }
    rawLineEmpty = true;
  }
  return false;
}

async function onMessage(m) {
  try {
    switch (m.cmd) {
      case "advance": {
        await advanceTo(m.to);
        if (dead) return;            // the reset message answers for this boot
        syncFlash();
        post({ t: "reply", id: m.id, result: { now_ms: vnow, heap_peak: heapPeak } });
        return;
      }
      case "set_pin": {
        const old = API.pin_read(m.pin);
        inputs.pins[m.pin] = m.value ? 1 : 0;
        fireIrq(m.pin, old, API.pin_read(m.pin));
        if (!realtime) await settle();
        break;
      }
      case "set_inputs": Object.assign(inputs, m.inputs); break;
      case "set_adc": inputs.adc[m.pin] = m.value; break;
      case "uart_rx": {
        const q = uartRx[m.uart] || (uartRx[m.uart] = []);
        for (const c of m.b) q.push(c);
        if (q.length > 65536) q.splice(0, q.length - 65536);   // RX buffer overflow drops old bytes
        break;
      }
      case "console": {
        for (const c of m.b) {
          if (consoleChar(c)) return;
        }
        flushOut();
        syncFlash();
        if (!realtime) await settle();
        break;
      }
      case "ble": {
        let ok = false;
        if (bleHandler && !dead) {
          try { ok = bleHandler(m.k, m.conn, m.arg || 0, m.data || ""); } catch (e) { event("irq_error", { ble: m.k, error: String(e.message || e) }); }
        }
        if (m.k === "connect" && !ok) post({ t: "ble", k: "disconnect", conn: m.conn, refused: true });
        if (!realtime) await settle();
        break;
      }
      case "wifi": {
        W.wifi = m.wifi;
        if (!m.wifi || !m.wifi.up) wifiDrop(200);       // out of range: STAT_BEACON_TIMEOUT
        break;
      }
      case "sync_flash": syncFlash(); break;
      case "reset_heap_peak": heapPeak = 0; break;
      case "live_heap": {
        // collected from here, between Python's turns: no Python frame and no call from Python into
        // JavaScript is in flight, so neither keeps garbage or proxy-table entries alive
        const g = mp.pyimport("gc");
        g.collect();
        post({ t: "reply", id: m.id, result: { live: g.mem_alloc() } });
        return;
      }
      case "state": post({ t: "reply", id: m.id, result: { pins: Object.assign({}, pinOut), pwm, pin_modes: pinMode, heap_peak: heapPeak, now_ms: nowV() } }); return;
      case "shutdown": {
        let d = null; try { d = flashDiff(false); } catch (e) { /* keep last */ }
        dead = true;
        post({ t: "reply", id: m.id, result: { flash: d, heap_peak: heapPeak, now_ms: nowV() } });
        return;
      }
      case "reset": API.reset(m.kind); return;
      default: throw new Error(`unknown worker command ${m.cmd}`);
    }
    if (m.id !== undefined) post({ t: "reply", id: m.id, result: {} });
  } catch (e) {
    if (m.id !== undefined) post({ t: "reply", id: m.id, error: String(e && e.message || e) });
  }
}

// ---------------------------------------------------------------------------- boot
async function boot() {
  const { loadMicroPython } = await import(PKG);
  mp = await loadMicroPython({ stdout: onStdout, stderr: onStdout, linebuffer: false, heapsize: W.heap_bytes });
  globalThis.vboard = API;
  const FS = mp.FS;
  // vmachine modules (machine, clock, vclock, ...) live outside the flash, first on sys.path
  for (const name of fs.readdirSync(W.vmachine_dir)) {
    if (!name.endsWith(".py") || (W.without || []).includes(name.slice(0, -3))) continue;
    FS.mkdirTree("/_vmachine");
    FS.writeFile("/_vmachine/" + name, fs.readFileSync(path.join(W.vmachine_dir, name)));
  }
  // flash contents
  for (const d of W.flash.dirs) FS.mkdirTree(d);
  for (const [p, b] of Object.entries(W.flash.files)) {
    const dir = p.slice(0, p.lastIndexOf("/"));
    if (dir) FS.mkdirTree(dir);
    FS.writeFile(p, b);
  }
  flashSeen = flashScan();
  mp.runPython(`import sys, gc
sys.path[:] = ['/_vmachine', '', '.frozen', '/lib']`);
  // the simulator's own heap (asyncio, boot helper, clock, machine and radio modules: C on a
  // chip, or not there at all) is measured with collections made from here, where no Python
  // frame keeps garbage alive
  const gcmod = mp.pyimport("gc");
  gcmod.collect();
  const vmHeap = gcmod.mem_alloc();
  const vmQstr = qstrInfo();
  const vmPools = vmQstr.arrays;
  // asyncio: this port has no blocking sleep, so the firmware's loop is an asyncio task here
  // (common.clock), where a chip's firmware never imports it; imported before the virtual time
  // patch so its run loop keeps real ticks
  mp.runPython(`import asyncio, asyncio.core`);
  mp.runPython(`import _vboard_boot
_vboard_boot.install(${W.patch_time ? "True" : "False"}, ${JSON.stringify(W.heap_mode)}, ${W.heap_budget ? W.heap_budget : "None"})`);
  const bootmod = mp.pyimport("_vboard_boot");
  if (W.heap_budget) {
    gcmod.collect();
    // its names' text is the simulator's, but not the pool arrays that grew to hold them: a
    // firmware interns more names than the simulator (~800 against ~350), so a chip allocates
    // the same pools for the firmware's own (docs/virtual-boards.md, heap budget)
    const q = qstrInfo();
    simNames = q.names - vmQstr.names;
    bootmod.sim_heap(gcmod.mem_alloc() - vmHeap - (q.arrays - vmPools));
    heapCheck = bootmod._recheck;
  }
  memAlloc = bootmod.mem_sample;
  post({ t: "booted", cause: W.reset_cause });
  inRepl = true;   // banner + prompt go to the console only; the REPL runs alongside the firmware
  try { mp.replInit(); } finally { inRepl = false; }
  flushOut();
  if (realtime) armReal();
  // boot.py then main.py, as the ESP32 port does
  try { bootmod.run_file("boot.py"); } catch (e) { /* reported by run_file */ }
  if (!dead) { try { bootmod.run_file(W.main); } catch (e) { /* reported by run_file */ } }
  if (!realtime && !dead) await settle();
  if (!dead) { syncFlash(); post({ t: "ready" }); }
}

parentPort.on("message", (m) => { onMessage(m); });
boot().catch((e) => {
  post({ t: "fatal", error: String(e && e.stack || e) });
});
