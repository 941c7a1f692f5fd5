#!/usr/bin/env node
// vboard board process: one virtual ESP32.
//
//   node board.mjs CONFIG.json
//
// The main thread keeps everything that survives a reset (flash, virtual clock, RTC,
// RTC memory, peripheral inputs, event log) and the host-facing endpoints:
//   * control channel: JSON lines on stdin (commands) / stdout (replies + notifications)
//   * link UART: TCP server on 127.0.0.1 (pyserial "socket://127.0.0.1:PORT")
//   * console (REPL): a pty master fd handed over by the host and/or a TCP server
// Each boot runs in a fresh worker thread (vm_worker.mjs) = a fresh MicroPython VM.
import { Worker } from "node:worker_threads";
import fs from "node:fs";
import net from "node:net";
import tty from "node:tty";
import path from "node:path";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CAUSE = { power: 1, hard: 2, wdt: 3, deepsleep: 4, soft: 5 };
const MAX_EVENTS_PENDING = 100000;

const cfg = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const realtime = !!cfg.realtime;

function notify(obj) { process.stdout.write(JSON.stringify(obj) + "\n"); }
function fatal(kind, msg) { notify({ ev: "fatal", kind, error: msg }); shutdownAndExit(3); }

// ---------------------------------------------------------------------------- persistent state
const st = {
  now: 0,                          // virtual ms since the board was created
  rtcOffset: cfg.start_unix_ms,    // unix ms at now == 0
  rtcMem: "",
  inputs: { pins: {}, adc: {}, distance_mm: cfg.distance_mm ?? null, temperature_c: cfg.temperature_c ?? 20 },
  pinOut: {}, pinModes: {}, pwm: {},
  heapPeak: 0,
  boots: 0,
  state: "off",                    // off | booting | running | asleep | hung | stopped
  wakeAt: null,
  rtWakeBase: null,
  wifi: cfg.wifi || null,          // the access point in range: {ssid, psk, up, gateway: [host, port]}
};
let realBase = performance.now();
function nowRT() { return realtime ? st.now + (performance.now() - realBase) : st.now; }
function setNow(v) { st.now = v; realBase = performance.now(); }

// ---------------------------------------------------------------------------- flash (host dir is the truth)
const flashDir = path.resolve(cfg.flash_dir);
fs.mkdirSync(flashDir, { recursive: true });
function readFlash() {
  const files = {}, dirs = [];
  const walk = (host, vm) => {
    for (const name of fs.readdirSync(host)) {
      const h = path.join(host, name), v = vm + "/" + name;
      const s = fs.statSync(h);
      if (s.isDirectory()) { dirs.push(v); walk(h, v); } else if (s.isFile()) files[v] = fs.readFileSync(h);
    }
  };
  walk(flashDir, "");
  return { files, dirs };
}
function applyFlashDiff(d) {
  if (!d) return;
  const safe = (p) => { const h = path.join(flashDir, p); if (!h.startsWith(flashDir + path.sep)) throw new Error("bad path " + p); return h; };
  for (const p of d.deleted || []) { try { fs.rmSync(safe(p), { recursive: true, force: true }); } catch (e) { /* gone */ } }
  for (const p of d.dirs || []) fs.mkdirSync(safe(p), { recursive: true });
  for (const [p, b] of Object.entries(d.files || {})) {
    const h = safe(p);
    fs.mkdirSync(path.dirname(h), { recursive: true });
    fs.writeFileSync(h, Buffer.from(b));
  }
}

// ---------------------------------------------------------------------------- worker (one per boot)
let worker = null;
let workerReady = null;           // promise resolved when the firmware's boot settled
let wReplies = new Map();
let wSeq = 1;
let consoleQueue = [];

function event(type, fields) { notify({ ev: "event", event: Object.assign({ type, t_ms: Math.round(nowRT()) }, fields || {}) }); }

function bootWorker(cause) {
  st.boots += 1;
  st.state = "booting";
  st.wakeAt = null;
  st.pinOut = {}; st.pwm = {}; st.pinModes = {};
  if (cause === "power") st.rtcMem = "";    // RTC slow memory is lost on power-off
  const flash = readFlash();
  const top = [...new Set(Object.keys(flash.files).concat(flash.dirs).map((p) => p.split("/")[1]))];
  const wd = {
    now_ms: st.now, realtime, rtc_offset_ms: st.rtcOffset, rtc_mem: st.rtcMem,
    reset_cause: CAUSE[cause], wake_reason: cause === "deepsleep" ? 4 : 0,
    inputs: JSON.parse(JSON.stringify(st.inputs)), flash, flashTop: top,
    vmachine_dir: cfg.vmachine_dir, main: cfg.main, heap_bytes: cfg.heap_bytes, heap_mode: cfg.heap_mode,
    heap_budget: cfg.heap_budget, wifi: st.wifi, without: cfg.without || [],
    patch_time: cfg.patch_time, ultrasonic: cfg.ultrasonic, uid: cfg.uid,
    console_soft_reset: cfg.console_soft_reset,
  };
  event("boot", { cause, reset_cause: CAUSE[cause], boot: st.boots });
  const w = new Worker(path.join(HERE, "vm_worker.mjs"), { workerData: wd });
  worker = w;
  wReplies = new Map();
  let readyResolve, readyReject;
  workerReady = new Promise((res, rej) => { readyResolve = res; readyReject = rej; });
  workerReady.catch(() => {});
  w.on("message", (m) => onWorkerMessage(w, m, readyResolve));
  w.on("error", (e) => { if (w === worker) { st.state = "hung"; notify({ ev: "stderr", text: String(e && e.stack || e) }); readyReject(e); failPending(e); } });
  w.on("exit", () => { if (w === worker && st.state !== "stopped" && !resetting) { st.state = "hung"; readyReject(new Error("VM exited")); failPending(new Error("VM exited")); } });
  return workerReady;
}
function failPending(e) { for (const [, p] of wReplies) p.reject(e); wReplies.clear(); }

// timeoutMs is a no-progress timeout: any message from the worker restarts it.
let lastWorkerMsg = performance.now();
function toWorker(msg, timeoutMs) {
  const w = worker;
  if (!w) return Promise.reject(new Error(`board is ${st.state}`));
  const id = wSeq++;
  return new Promise((resolve, reject) => {
    let timer = null;
    const check = () => {
      const idle = performance.now() - lastWorkerMsg;
      if (idle >= timeoutMs) { wReplies.delete(id); reject(Object.assign(new Error("worker timeout"), { hang: true })); }
      else timer = setTimeout(check, timeoutMs - idle + 5);
    };
    lastWorkerMsg = performance.now();
    if (timeoutMs) timer = setTimeout(check, timeoutMs);
    wReplies.set(id, {
      resolve: (v) => { if (timer) clearTimeout(timer); resolve(v); },
      reject: (e) => { if (timer) clearTimeout(timer); reject(e); },
    });
    w.postMessage(Object.assign({ id }, msg));
  });
}
function tellWorker(msg) { if (worker && st.state !== "asleep") worker.postMessage(msg); }

let resetting = false;
let resetWaiters = [];           // host commands waiting for the next reset to finish
let resetDone = null;            // promise: a reset in progress completes
let lastWdt = null;              // {timeout, at} mirrored from the worker, for hang handling

function onWorkerMessage(w, m, readyResolve) {
  if (w !== worker) return;      // a stale boot
  lastWorkerMsg = performance.now();
  switch (m.t) {
    case "progress": break;
    case "console": writeConsole(Buffer.from(m.b)); break;
    case "log": notify({ ev: "log", line: m.line, t_ms: m.t_ms }); break;
    case "event":
      if (m.ev.type === "wdt_start" || m.ev.type === "wdt_feed") {
        const timeout = m.ev.timeout_ms ?? (lastWdt && lastWdt.timeout);
        lastWdt = { timeout, at: m.ev.t_ms + timeout };
        if (m.ev.type === "wdt_feed" && !cfg.record_wdt_feeds) { wdtFeeds += 1; break; }
      }
      notify({ ev: "event", event: m.ev });
      break;
    case "pinout": st.pinOut[m.id] = m.v; if (cfg.record_pins) event("pin", { pin: m.id, value: m.v }); break;
    case "pinmode": st.pinModes[m.id] = { mode: m.mode, pull: m.pull }; break;
    case "pwm": if (m.duty_u16 === null) delete st.pwm[m.id]; else st.pwm[m.id] = { freq: m.freq, duty_u16: m.duty_u16 }; if (cfg.record_pwm) event("pwm", { pin: m.id, freq: m.freq, duty_u16: m.duty_u16 }); break;
    case "uart_tx": onUartTx(m.id, Buffer.from(m.b)); break;
    case "ble": { const o = Object.assign({ ev: "ble" }, m); delete o.t; notify(o); break; }
    case "rtc": st.rtcOffset = m.rtc_offset_ms; break;
    case "rtc_mem": st.rtcMem = m.hex; break;
    case "flash": applyFlashDiff(m.diff); break;
    case "booted": st.state = "running"; flushConsoleQueue(); break;
    case "ready": readyResolve(); break;
    case "fatal": notify({ ev: "stderr", text: m.error }); st.state = "hung"; failPending(new Error(m.error)); break;
    case "reply": {
      const p = wReplies.get(m.id);
      if (!p) break;
      wReplies.delete(m.id);
      if (m.result && m.result.heap_peak > st.heapPeak) st.heapPeak = m.result.heap_peak;
      if (m.result && m.result.now_ms !== undefined && !realtime) setNow(m.result.now_ms);
      if (m.error) p.reject(new Error(m.error)); else p.resolve(m.result);
      break;
    }
    case "reset": onReset(m, readyResolve); break;
  }
}
let wdtFeeds = 0;

// A boot ended (deepsleep, WDT, machine.reset): keep flash, drop the VM, boot again.
function onReset(m, readyResolve) {
  resetting = true;
  if (m.heap_peak > st.heapPeak) st.heapPeak = m.heap_peak;
  applyFlashDiff(m.flash);
  setNow(realtime ? nowRT() : m.now_ms);
  const old = worker; worker = null; lastWdt = null;
  notify({ ev: "ble", k: "off" });   // RAM and radio are gone: no advertising, no connection
  const pend = wReplies; wReplies = new Map();
  if (old) old.terminate();
  // Answer the requests of the ended boot now: this also stops their hang timers, which
  // must not run while the next boot starts (a slow boot is not a hung firmware).
  for (const [, p] of pend) p.resolve({ reset: m.cause });
  event("reset", { cause: m.cause, sleep_ms: m.sleep_ms ?? undefined });
  readyResolve();
  let resolveDone; resetDone = new Promise((r) => { resolveDone = r; });
  const finish = () => {
    resetting = false;
    const ws = resetWaiters; resetWaiters = []; for (const r of ws) r();
    resolveDone();
  };
  if (m.cause === "deepsleep") {
    st.state = "asleep";
    st.wakeAt = m.sleep_ms === null || m.sleep_ms === undefined ? Infinity : st.now + m.sleep_ms;
    if (realtime && st.wakeAt !== Infinity) setTimeout(() => { if (st.state === "asleep") { setNow(st.wakeAt); bootWorker("deepsleep"); } }, m.sleep_ms);
    finish();
  } else {
    bootWorker(m.cause).then(finish, finish);
  }
}

// ---------------------------------------------------------------------------- link UART over TCP
let linkClient = null;
let linkServer = null;
const linkUart = cfg.link_uart;
const uartTx = {};               // bytes written to the other UARTs, for the host to read
function onUartTx(id, b) {
  if (id === linkUart) { if (linkClient) linkClient.write(b); else linkDropped += b.length; return; }
  const q = uartTx[id] || (uartTx[id] = []);
  for (const c of b) q.push(c);
  if (q.length > 65536) q.splice(0, q.length - 65536);
}
let linkDropped = 0;
function startLink() {
  return new Promise((resolve, reject) => {
    linkServer = net.createServer((sock) => {
      if (linkClient) linkClient.destroy();  // one serial cable at a time; the newest wins
      linkClient = sock;
      sock.setNoDelay(true);
      sock.on("data", (d) => tellWorker({ cmd: "uart_rx", uart: linkUart, b: d }));
      sock.on("close", () => { if (linkClient === sock) linkClient = null; });
      sock.on("error", () => {});
    });
    linkServer.on("error", (e) => reject(e));
    linkServer.listen(cfg.link_port || 0, "127.0.0.1", () => resolve(linkServer.address().port));
  });
}

// ---------------------------------------------------------------------------- console (REPL)
let conOut = [];                 // writable endpoints
function writeConsole(b) {
  for (const s of conOut) if (!s.destroyed && s.writableLength < 65536) s.write(b);
}
function consoleInput(d) {
  if (st.state === "running") tellWorker({ cmd: "console", b: d });
  else if (st.state === "booting") consoleQueue.push(d);
  // asleep / off: a sleeping chip does not answer
}
function flushConsoleQueue() { for (const d of consoleQueue) tellWorker({ cmd: "console", b: d }); consoleQueue = []; }
function startConsolePty(fd) {
  const s = new tty.ReadStream(fd);
  s.on("data", consoleInput);
  s.on("error", () => {});
  conOut.push(s);
}
let conServer = null;
function startConsoleTcp() {
  return new Promise((resolve, reject) => {
    conServer = net.createServer((sock) => {
      conOut.push(sock);
      sock.on("data", consoleInput);
      sock.on("close", () => { conOut = conOut.filter((x) => x !== sock); });
      sock.on("error", () => {});
    });
    conServer.on("error", reject);
    conServer.listen(cfg.console_port || 0, "127.0.0.1", () => resolve(conServer.address().port));
  });
}

// ---------------------------------------------------------------------------- stepped clock across boots
async function advance(ms) {
  if (realtime) throw new Error("advance() needs a stepped board (realtime=False)");
  const target = st.now + ms;
  for (let guard = 0; guard < 100000; guard++) {
    if (resetting) { await resetDone; continue; }
    if (st.state === "asleep") {
      if (st.wakeAt <= target) { setNow(st.wakeAt); await bootWorker("deepsleep"); continue; }
      setNow(target); break;
    }
    if (st.state === "hung" || st.state === "off") throw new Error(`board is ${st.state}`);
    if (st.state === "booting") { await workerReady; continue; }
    let r;
    try {
      r = await toWorker({ cmd: "advance", to: target }, cfg.hang_timeout_ms);
    } catch (e) {
      if (!e.hang) throw e;
      await onHang();
      continue;
    }
    if (r && r.reset) continue;      // the boot ended inside this step: carry on after the reset
    break;
  }
  return { now_ms: st.now };
}
// The firmware did not return to its scheduler within hang_timeout: a real chip's WDT
// would bite; without a WDT the board is stuck (like a real one) and we say so.
async function onHang() {
  if (resetting) { await resetDone; return; }
  if (!worker) return;
  if (lastWdt) {
    const fakeMsg = { cause: "wdt", now_ms: Math.max(st.now, lastWdt.at), flash: null, heap_peak: 0 };
    event("wdt_expired", { timeout_ms: lastWdt.timeout, hung: true });
    onReset(fakeMsg, () => {});
    await resetDone;
    return;
  }
  st.state = "hung";
  if (worker) worker.terminate();
  throw new Error(`firmware hung: no return to the scheduler within ${cfg.hang_timeout_ms} ms and no WDT armed`);
}

async function powerCycle(offMs, cause) {
  if (worker) {
    try { const r = await toWorker({ cmd: "shutdown" }, 2000); applyFlashDiff(r.flash); } catch (e) { /* hung: last snapshot */ }
    resetting = true; worker.terminate(); worker = null; resetting = false;
  }
  failPending(new Error("power cycled"));
  notify({ ev: "ble", k: "off" });
  lastWdt = null;
  event("power_off", { off_ms: offMs, cause });
  setNow(nowRT() + (realtime ? 0 : offMs));
  if (realtime && offMs > 0) await new Promise((r) => setTimeout(r, offMs));
  await bootWorker(cause);
}

// ---------------------------------------------------------------------------- control channel
async function handle(c) {
  switch (c.cmd) {
    case "advance": return advance(c.ms);
    case "set_pin": {
      st.inputs.pins[c.pin] = c.value ? 1 : 0;
      if (worker && st.state === "running") await toWorker({ cmd: "set_pin", pin: c.pin, value: c.value });
      return {};
    }
    case "set_adc": st.inputs.adc[c.pin] = c.value; tellWorker({ cmd: "set_adc", pin: c.pin, value: c.value }); return {};
    case "set_inputs": Object.assign(st.inputs, c.inputs); tellWorker({ cmd: "set_inputs", inputs: c.inputs }); return {};
    case "state": {
      if (worker && st.state === "running" && realtime) { try { const r = await toWorker({ cmd: "state" }, 2000); if (r.heap_peak > st.heapPeak) st.heapPeak = r.heap_peak; } catch (e) { /* keep mirror */ } }
      return { now_ms: nowRT(), unix_ms: st.rtcOffset + nowRT(), state: st.state, boots: st.boots, pins: st.pinOut, pin_modes: st.pinModes,
               pwm: st.pwm, heap_peak: st.heapPeak, wake_at: st.wakeAt === Infinity ? null : st.wakeAt, wdt_feeds: wdtFeeds,
               link_dropped: linkDropped, rtc_mem: st.rtcMem };
    }
    case "reset_heap_peak": st.heapPeak = 0; if (worker) { try { await toWorker({ cmd: "state" }, 2000); } catch (e) { /* */ } } st.heapPeak = 0; tellWorker({ cmd: "reset_heap_peak" }); return {};
    case "sync_flash": if (worker && st.state === "running") { await toWorker({ cmd: "sync_flash" }, 5000); } return {};
    case "live_heap": {
      if (!worker || st.state !== "running") throw new Error(`board is ${st.state}`);
      return await toWorker({ cmd: "live_heap" }, 5000);
    }
    case "power_cycle": await powerCycle(c.off_ms || 0, "power"); return { now_ms: st.now };
    case "reset": {
      if (st.state === "running") {
        const done = new Promise((r) => resetWaiters.push(r));
        tellWorker({ cmd: "reset", kind: c.kind || "hard" });
        const t = new Promise((r) => setTimeout(() => r("timeout"), cfg.hang_timeout_ms));
        if ((await Promise.race([done, t])) === "timeout") await powerCycle(0, c.kind || "hard");
      } else await powerCycle(0, c.kind || "hard");
      while (resetting || st.state === "booting") { if (resetting) await resetDone; else await workerReady; }
      return {};
    }
    case "wake": {  // an external wake source (e.g. a pin) ends deep sleep now
      if (st.state !== "asleep") return { woke: false };
      await bootWorker("deepsleep");
      return { woke: true };
    }
    case "uart_write": {  // host -> firmware on any UART (e.g. a card reader wire)
      if (worker && st.state === "running") await toWorker({ cmd: "uart_rx", uart: c.uart, b: Buffer.from(c.hex, "hex") });
      return {};
    }
    case "uart_read": { const q = uartTx[c.uart] || []; uartTx[c.uart] = []; return { hex: Buffer.from(q).toString("hex") }; }
    case "ble": {  // the host's central: connect / write / disconnect (no reply awaited)
      if (worker && st.state === "running") tellWorker({ cmd: "ble", k: c.k, conn: c.conn, arg: c.arg, data: c.data });
      else if (c.k === "connect") notify({ ev: "ble", k: "disconnect", conn: c.conn, refused: true });
      return {};
    }
    case "wifi": { st.wifi = c.wifi; tellWorker({ cmd: "wifi", wifi: c.wifi }); return {}; }
    case "ping": return { state: st.state };
    case "stop": await stop(); return {};
    default: throw new Error(`unknown command ${c.cmd}`);
  }
}

let chain = Promise.resolve();
function onControlLine(line) {
  if (!line.trim()) return;
  let c;
  try { c = JSON.parse(line); } catch (e) { notify({ ev: "stderr", text: `bad control line: ${line}` }); return; }
  chain = chain.then(async () => {
    // Bytes the host wrote to the link/console before this command are readable in the
    // same poll phase; one setImmediate lets them reach the worker first (ordering).
    await new Promise((r) => setImmediate(r));
    try { notify({ id: c.id, ok: true, result: await handle(c) }); }
    catch (e) { notify({ id: c.id, ok: false, error: String(e && e.message || e) }); }
  });
}

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  if (worker) {
    try { const r = await toWorker({ cmd: "shutdown" }, 2000); applyFlashDiff(r.flash); } catch (e) { /* keep last snapshot */ }
    resetting = true; worker.terminate(); worker = null;
  }
  st.state = "stopped";
}
function shutdownAndExit(code) {
  stop().finally(() => {
    process.stdout.write("", () => process.exit(code));
    setTimeout(() => process.exit(code), 500).unref();
  });
}

// ---------------------------------------------------------------------------- main
async function main() {
  let linkPort, conPort = null;
  try { linkPort = await startLink(); }
  catch (e) { fatal(e.code === "EADDRINUSE" ? "port_busy" : "link", `link port ${cfg.link_port}: ${e.message}`); return; }
  if (cfg.console_port !== null && cfg.console_port !== undefined) {
    try { conPort = await startConsoleTcp(); }
    catch (e) { fatal(e.code === "EADDRINUSE" ? "port_busy" : "console", `console port ${cfg.console_port}: ${e.message}`); return; }
  }
  if (cfg.console_fd !== null && cfg.console_fd !== undefined) startConsolePty(cfg.console_fd);
  let buf = "";
  process.stdin.on("data", (d) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf("\n")) >= 0) { onControlLine(buf.slice(0, i)); buf = buf.slice(i + 1); }
  });
  // The host went away (even SIGKILL closes our stdin): never outlive it.
  process.stdin.on("end", () => shutdownAndExit(0));
  notify({ ev: "listening", link_port: linkPort, console_port: conPort });
  try { await bootWorker("power"); }
  catch (e) { fatal("boot", `firmware did not boot: ${e && e.message}`); return; }
  notify({ ev: "started", now_ms: st.now });
  if (realtime) {
    // A firmware spinning without awaiting never lets the worker's own WDT timer run:
    // the main thread bites for it (200 ms grace for the worker to do it itself).
    setInterval(() => {
      if (st.state === "running" && !resetting && lastWdt && nowRT() > lastWdt.at + 200) onHang().catch(() => {});
    }, 100).unref();
  }
}
// A bug in this file must not silently take the board away: report it and carry on.
process.stdout.on("error", () => process.exit(0));   // the host is gone: so are we
process.on("uncaughtException", (e) => { notify({ ev: "stderr", text: `board.mjs: ${e && e.stack || e}` }); });
process.on("unhandledRejection", (e) => { notify({ ev: "stderr", text: `board.mjs: ${e && e.stack || e}` }); });
main();
