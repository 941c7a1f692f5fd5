#!/usr/bin/env node
// mpvm runner: run Python code inside the genuine MicroPython WebAssembly port.
//
// Usage: node runner.mjs [--mount HOST:VM]... [--path VMDIR]... (--main FILE | --code STR)
//                        [--timeout-ms N] [--heap BYTES]
// Exit status: 0 ok, 1 uncaught Python exception (traceback on stderr), 2 usage error,
// 124 timeout; sys.exit(n) exits with n.
//
// The VM runs in a worker thread so the main thread can enforce the timeout even when
// Python spins in a synchronous loop (a single JS thread could never interrupt it).
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
// PARK_VBOARD_VM: another build of the same port, as for the virtual boards (sim/mpvm/frozen.py)
const PKG = process.env.PARK_VBOARD_VM ? pathToFileURL(process.env.PARK_VBOARD_VM).href
  : "@micropython/micropython-webassembly-pyscript";

function usage(msg) {
  process.stderr.write(`mpvm runner: ${msg}\n` +
    "usage: runner.mjs [--mount HOST:VM]... [--path VMDIR]... (--main FILE | --code STR) [--timeout-ms N]\n");
  process.exit(2);
}

function parseArgs(argv) {
  const o = { mounts: [], paths: [], main: null, code: null, timeoutMs: 0, heap: 0 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => { if (i + 1 >= argv.length) usage(`${a} needs a value`); return argv[++i]; };
    if (a === "--mount") {
      const v = val(); const k = v.lastIndexOf(":");
      if (k <= 0 || k === v.length - 1) usage(`--mount wants HOST:VM, got ${v}`);
      o.mounts.push([v.slice(0, k), v.slice(k + 1)]);
    } else if (a === "--path") o.paths.push(val());
    else if (a === "--main") o.main = val();
    else if (a === "--code") o.code = val();
    else if (a === "--timeout-ms") o.timeoutMs = parseInt(val(), 10);
    else if (a === "--heap") o.heap = parseInt(val(), 10);
    else if (a === "-h" || a === "--help") usage("help");
    else usage(`unknown argument ${a}`);
  }
  if ((o.main === null) === (o.code === null)) usage("give exactly one of --main or --code");
  if (Number.isNaN(o.timeoutMs) || o.timeoutMs < 0) usage("bad --timeout-ms");
  for (const [h] of o.mounts) if (!fs.existsSync(h)) usage(`mount source does not exist: ${h}`);
  return o;
}

// Copy a host file or tree into the Emscripten MEMFS (shared with vboard).
export function mountTree(FS, host, vm) {
  const st = fs.statSync(host);
  if (st.isDirectory()) {
    FS.mkdirTree(vm);
    for (const name of fs.readdirSync(host)) {
      if (name === "__pycache__" || name.endsWith(".pyc") || name === "node_modules" || name.startsWith(".git")) continue;
      mountTree(FS, path.join(host, name), vm.replace(/\/$/, "") + "/" + name);
    }
  } else if (st.isFile()) {
    const dir = vm.slice(0, vm.lastIndexOf("/"));
    if (dir) FS.mkdirTree(dir);
    FS.writeFile(vm, fs.readFileSync(host));
  }
}

// Byte stream -> chunked messages (the port calls stdout once per byte when linebuffer=false).
export function makeSink(send) {
  let buf = [];
  let scheduled = false;
  const flush = () => { scheduled = false; if (buf.length) { const b = Buffer.from(buf); buf = []; send(b); } };
  const put = (u8) => {
    for (const c of u8) buf.push(c);
    if (buf.length >= 4096 || u8[u8.length - 1] === 10) flush();
    else if (!scheduled) { scheduled = true; setImmediate(flush); }
  };
  put.flush = flush;
  return put;
}

function exitCodeFor(err) {
  // PythonError.type is the exception class name; SystemExit carries its code in the message.
  if (err && err.name === "PythonError" && err.type === "SystemExit") {
    const m = /SystemExit:\s*(-?\d+)\s*$/.exec(err.message.trim());
    if (m) return parseInt(m[1], 10) & 0xff;
    if (/SystemExit:?\s*$/.test(err.message.trim())) return 0;
    return 1;
  }
  return 1;
}

async function workerMain() {
  const o = workerData;
  const { loadMicroPython } = await import(PKG);
  const out = makeSink((b) => parentPort.postMessage({ t: "out", fd: 1, b }));
  const err = makeSink((b) => parentPort.postMessage({ t: "out", fd: 2, b }));
  const opts = { stdout: out, stderr: err, linebuffer: false };
  if (o.heap) opts.heapsize = o.heap;
  const mp = await loadMicroPython(opts);
  let code = 0;
  try {
    for (const [h, v] of o.mounts) mountTree(mp.FS, h, v);
    if (o.paths.length) mp.runPython(`import sys\nfor _p in reversed(${JSON.stringify(o.paths)}):\n    sys.path.insert(0, _p)\ndel _p`);
    let src = o.code;
    if (o.main !== null) {
      try { src = mp.FS.readFile(o.main, { encoding: "utf8" }); }
      catch (e) { throw Object.assign(new Error(`--main ${o.main}: no such file in the VM fs`), { usage: true }); }
    }
    await mp.runPythonAsync(src);
  } catch (e) {
    if (e && e.usage) { err(Buffer.from(`mpvm runner: ${e.message}\n`)); code = 2; }
    else if (e && e.name === "PythonError") {
      code = exitCodeFor(e);
      if (e.type !== "SystemExit") err(Buffer.from(e.message));
    } else { err(Buffer.from(`mpvm runner: internal error: ${e && e.stack || e}\n`)); code = 1; }
  }
  out.flush(); err.flush();
  parentPort.postMessage({ t: "done", code });
}

function main() {
  const o = parseArgs(process.argv.slice(2));
  const pkgDir = process.env.PARK_VBOARD_VM || path.join(HERE, "node_modules", ...PKG.split("/"));
  if (!fs.existsSync(pkgDir)) {
    process.stderr.write(`mpvm runner: ${PKG} is not installed in ${HERE}/node_modules; run ./dev setup\n`);
    process.exit(3);
  }
  const w = new Worker(fileURLToPath(import.meta.url), { workerData: o });
  let finished = false;
  const finish = (code) => {
    if (finished) return; finished = true;
    // Let stdio drain before exiting so nothing printed is lost.
    process.stdout.write("", () => process.stderr.write("", () => process.exit(code)));
  };
  w.on("message", (m) => {
    if (m.t === "out") (m.fd === 1 ? process.stdout : process.stderr).write(m.b);
    else if (m.t === "done") { w.terminate(); finish(m.code); }
  });
  w.on("error", (e) => { process.stderr.write(`mpvm runner: VM crashed: ${e && e.message}\n`); finish(1); });
  w.on("exit", () => finish(1));
  if (o.timeoutMs > 0) setTimeout(() => {
    process.stderr.write(`\nmpvm runner: timeout after ${o.timeoutMs} ms\n`);
    w.terminate(); finish(124);
  }, o.timeoutMs).unref();
}

if (isMainThread) {
  if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main();
} else if (workerData && workerData.__mpvm_runner !== false) {
  workerMain();
}
