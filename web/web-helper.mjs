// crossdl's web helper: hosts TF.js, ONNX Runtime Web and TFLite-in-the-browser either in this
// Node process (platform "node") or in a real headless Chromium or Firefox it launches with
// puppeteer-core (platforms "chromium", "firefox"). It speaks the JSON-lines protocol of
// web/ort-helper.mjs; docs/web-protocol.md is the contract, the C++ side is adapters/web and
// adapters/node. stdout carries replies only; stderr is free-form log (page console included).
//
// The helper handles hello, start and memory itself and forwards every other op to
// web/harness/harness.mjs handle(libs, req): in Node by a direct call, in the browser through
// page.evaluate. EOF on stdin, SIGTERM/SIGINT/SIGHUP or an uncaught error close the browser,
// remove its temporary profile and exit.
import { createRequire } from 'node:module';
import { createServer } from 'node:http';
import { existsSync, mkdtempSync, readFileSync, realpathSync, rmSync, statSync, createReadStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, extname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';

import { serveJsonLines } from './json-lines.mjs';
import { childrenOf, killTree, treePids } from './proc-tree.mjs';

const PROTOCOL = 1;
const require = createRequire(import.meta.url);
const WEB_DIR = dirname(fileURLToPath(import.meta.url));
const HARNESS_DIR = join(WEB_DIR, 'harness');
const MODULES_DIR = join(WEB_DIR, 'node_modules');

// stdout carries the protocol only: whatever a library prints goes to stderr, where the client
// keeps it for error messages.
console.log = (...args) => console.error(...args);
console.info = (...args) => console.error(...args);
console.warn = (...args) => console.error(...args);
console.debug = (...args) => console.error(...args);

function log(msg) {
  process.stderr.write(`web-helper: ${msg}\n`);
}

class Unsupported extends Error {
  constructor(msg) {
    super(msg);
    this.unsupported = true;
  }
}

const BROWSERS = {
  chromium: { exe: '/usr/bin/chromium', product: 'Chromium' },
  firefox: { exe: '/usr/bin/firefox-esr', product: 'Firefox ESR' },
};

// ---------------------------------------------------------------------------------------------
// Static server: /harness/ (web/harness, flat), /lib/ (an explicit allow-list of dist files of
// web/node_modules), /artefact/ (the start's artefact_dir, read-only).

const LIB_FILES = (() => {
  const m = new Map();
  const add = (url, file) => m.set(url, file);
  add('/lib/tfjs/tf.min.js', '@tensorflow/tfjs/dist/tf.min.js');
  const wasm = '@tensorflow/tfjs-backend-wasm/dist/';
  add('/lib/tfjs-wasm/tf-backend-wasm.min.js', wasm + 'tf-backend-wasm.min.js');
  for (const f of ['tfjs-backend-wasm.wasm', 'tfjs-backend-wasm-simd.wasm',
    'tfjs-backend-wasm-threaded-simd.wasm'])
    add(`/lib/tfjs-wasm/${f}`, wasm + f);
  add('/lib/tfjs-webgpu/tf-backend-webgpu.min.js',
      '@tensorflow/tfjs-backend-webgpu/dist/tf-backend-webgpu.min.js');
  const ort = 'onnxruntime-web/dist/';
  add('/lib/ort/ort.all.min.js', ort + 'ort.all.min.js');
  for (const f of ['ort-wasm-simd-threaded', 'ort-wasm-simd-threaded.jsep',
    'ort-wasm-simd-threaded.asyncify', 'ort-wasm-simd-threaded.jspi']) {
    add(`/lib/ort/${f}.mjs`, `${ort}${f}.mjs`);
    add(`/lib/ort/${f}.wasm`, `${ort}${f}.wasm`);
  }
  const tflite = '@tensorflow/tfjs-tflite/dist/';
  add('/lib/tflite/tf-tflite.min.js', tflite + 'tf-tflite.min.js');
  for (const v of ['', '_simd', '_threaded', '_simd_threaded']) {
    add(`/lib/tflite/tflite_web_api_cc${v}.js`, `@tensorflow/tfjs-tflite/wasm/tflite_web_api_cc${v}.js`);
    add(`/lib/tflite/tflite_web_api_cc${v}.wasm`, `@tensorflow/tfjs-tflite/wasm/tflite_web_api_cc${v}.wasm`);
    if (v.endsWith('threaded'))
      add(`/lib/tflite/tflite_web_api_cc${v}.worker.js`,
          `@tensorflow/tfjs-tflite/wasm/tflite_web_api_cc${v}.worker.js`);
  }
  return m;
})();

const MIME = {
  '.html': 'text/html; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.bin': 'application/octet-stream',
  '.onnx': 'application/octet-stream',
  '.tflite': 'application/octet-stream',
  '.pb': 'application/octet-stream',
  '.txt': 'text/plain; charset=utf-8',
};

// Resolves `rel` (a URL path below a root, already decoded) inside `root`, or returns null.
function inside(root, rel) {
  if (rel === '' || isAbsolute(rel) || rel.includes('\0') || rel.includes('\\')) return null;
  if (rel.split('/').some((p) => p === '..' || p === '.' || p === '')) return null;
  const p = resolve(root, rel);
  return p.startsWith(root.endsWith(sep) ? root : root + sep) ? p : null;
}

// No way out of the artefact folder through a symbolic link either.
function realInside(file) {
  try {
    return inside(state.artefactReal, relative(state.artefactReal, realpathSync(file))) !== null;
  } catch {
    return false;
  }
}

function startServer(artefactDir) {
  const server = createServer((req, res) => {
    const headers = {
      'Cross-Origin-Opener-Policy': 'same-origin',
      'Cross-Origin-Embedder-Policy': 'require-corp',
      'Cross-Origin-Resource-Policy': 'same-origin',
      'Cache-Control': 'no-store',
    };
    const fail = (code, why) => {
      res.writeHead(code, { ...headers, 'Content-Type': 'text/plain; charset=utf-8' });
      res.end(why);
      if (code !== 404 || !req.url.endsWith('.map')) log(`http ${code} ${req.method} ${req.url}: ${why}`);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return fail(405, 'only GET and HEAD');
    let path;
    try {
      path = decodeURIComponent(new URL(req.url, 'http://127.0.0.1').pathname);
    } catch {
      return fail(400, 'bad URL');
    }
    let file = null;
    if (path.startsWith('/harness/')) file = inside(HARNESS_DIR, path.slice('/harness/'.length));
    else if (path.startsWith('/artefact/')) file = inside(artefactDir, path.slice('/artefact/'.length));
    else if (LIB_FILES.has(path)) file = join(MODULES_DIR, LIB_FILES.get(path));
    if (file === null) return fail(path.includes('..') ? 403 : 404, `not served: ${path}`);
    let st;
    try {
      st = statSync(file);
    } catch {
      return fail(404, `no such file: ${path}`);
    }
    if (!st.isFile()) return fail(404, `not a file: ${path}`);
    if (path.startsWith('/artefact/') && !realInside(file)) return fail(403, `outside the artefact folder: ${path}`);
    res.writeHead(200, {
      ...headers,
      'Content-Type': MIME[extname(file)] ?? 'application/octet-stream',
      'Content-Length': st.size,
    });
    if (process.env.CROSSDL_WEB_DEBUG) log(`http 200 ${req.method} ${path}`);
    if (req.method === 'HEAD') return res.end();
    createReadStream(file).on('error', () => res.destroy()).pipe(res);
  });
  return new Promise((ok, bad) => {
    server.once('error', bad);
    server.listen(0, '127.0.0.1', () => ok(server));
  });
}

// ---------------------------------------------------------------------------------------------
// Memory: PSS over a process tree (Firefox forks from non-main threads, so every task's children
// count), sampled every 100 ms for the peak.

function pssTree(root) {
  const seen = new Set();
  const stack = [root];
  let kb = 0;
  while (stack.length) {
    const pid = stack.pop();
    if (seen.has(pid)) continue;
    try {
      const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
      if (!m) continue;
      kb += Number(m[1]);
    } catch {
      continue;  // gone, or not ours to read
    }
    seen.add(pid);
    stack.push(...childrenOf(pid));
  }
  return { mb: kb / 1024, processes: seen.size };
}

// ---------------------------------------------------------------------------------------------
// State of the one platform a helper hosts.

const state = {
  started: false,
  platform: null,
  artefactDir: null,
  artefactReal: null,  // artefactDir with symbolic links resolved
  server: null,
  browser: null,
  browserPid: null,
  browserExited: null,  // a message once the browser went away
  page: null,
  profile: null,
  pageErrors: [],       // page errors not yet reported in a reply
  sampler: null,
  peakMb: 0,
  rootPid: process.pid,
  harness: null,        // Node: the imported harness module
  libs: null,           // Node: what libs.mjs initialised
};

function sample() {
  const { mb } = pssTree(state.rootPid);
  if (mb > state.peakMb) state.peakMb = mb;
}

function version(pkg) {
  try {
    return JSON.parse(readFileSync(join(MODULES_DIR, pkg, 'package.json'), 'utf8')).version;
  } catch {
    return null;
  }
}

async function checkStart(req) {
  const { BACKENDS } = await import(pathToFileURL(join(HARNESS_DIR, 'libs.mjs')).href);
  if (!Object.hasOwn(BACKENDS, req.runtime))
    throw new Error(`start: runtime '${req.runtime}' is not one of ${Object.keys(BACKENDS).join(', ')}`);
  if (!BACKENDS[req.runtime].includes(req.backend))
    throw new Error(`start: backend '${req.backend}' is not one of ${req.runtime}'s (${BACKENDS[req.runtime].join(', ')})`);
  if (req.platform !== 'node' && !(req.platform in BROWSERS))
    throw new Error(`start: platform '${req.platform}' is not one of node, ${Object.keys(BROWSERS).join(', ')}`);
  if (typeof req.artefact_dir !== 'string' || !isAbsolute(req.artefact_dir))
    throw new Error('start: artefact_dir must be an absolute path');
  let st;
  try {
    st = statSync(req.artefact_dir);
  } catch {
    throw new Error(`start: artefact_dir ${req.artefact_dir} does not exist`);
  }
  if (!st.isDirectory()) throw new Error(`start: artefact_dir ${req.artefact_dir} is not a folder`);
  const threads = req.threads ?? 1;
  if (!Number.isInteger(threads) || threads < 1) throw new Error('start: threads must be an integer >= 1');
}

function startArgs(req) {
  return { runtime: req.runtime, backend: req.backend, threads: req.threads ?? 1 };
}

async function startNode(req, t0) {
  state.harness = await import(pathToFileURL(join(HARNESS_DIR, 'harness.mjs')).href);
  const libsModule = await import(pathToFileURL(join(HARNESS_DIR, 'libs.mjs')).href);
  const artefactDir = state.artefactDir;
  const host = {
    platform: 'node',
    browser: `Node ${process.version}`,
    load: async (name) => {
      switch (name) {
        case 'tfjs': return require('@tensorflow/tfjs');
        case 'tfjs-wasm': return require('@tensorflow/tfjs-backend-wasm');
        case 'tfjs-webgpu': return require('@tensorflow/tfjs-backend-webgpu');
        case 'ort': return require('onnxruntime-web');
        default: throw new Error(`no library '${name}' in Node`);
      }
    },
    wasmPaths: null,  // the Node builds find their .wasm files themselves
    fetchBytes: async (file) => {
      const p = typeof file === 'string' ? inside(artefactDir, file) : null;
      if (p === null || (existsSync(p) && !realInside(p)))
        throw new Error(`artefact file '${file}' is not a relative path inside ${artefactDir}`);
      let b;
      try {
        b = readFileSync(p);
      } catch (e) {
        throw new Error(`cannot read artefact file ${p}: ${e.code ?? e.message}`);
      }
      return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
    },
  };
  const info = await libsModule.initLibs(host, startArgs(req));
  state.libs = info.libs;
  return { browser: host.browser, ...info.reply, browser_pid: null, ms: performance.now() - t0 };
}

async function launchBrowser(req) {
  const puppeteer = require('puppeteer-core');
  state.profile = mkdtempSync(join(tmpdir(), `crossdl-${req.platform}-`));
  watchdog.postMessage({ profile: state.profile });
  const common = {
    executablePath: BROWSERS[req.platform].exe,
    headless: true,
    userDataDir: state.profile,
    handleSIGINT: false,
    handleSIGTERM: false,
    handleSIGHUP: false,
    protocolTimeout: 0,  // the C++ client owns the timeouts
    timeout: 60000,
  };
  if (req.platform === 'chromium') {
    const args = [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--enable-blink-features=ForceEagerMeasureMemory',
    ];
    if (req.backend === 'webgpu')
      args.push('--enable-unsafe-webgpu', '--use-webgpu-adapter=swiftshader', '--enable-unsafe-swiftshader');
    return puppeteer.launch({ ...common, browser: 'chrome', args });
  }
  return puppeteer.launch({
    ...common,
    browser: 'firefox',
    extraPrefsFirefox: {
      'webgl.force-enabled': true,
      'network.proxy.type': 0,
      'app.update.enabled': false,
      'browser.shell.checkDefaultBrowser': false,
    },
    env: { ...process.env, MOZ_WEBGL_FORCE_EGL: '1' },
  });
}

function browserLabel(platform, raw) {
  // Chromium: "HeadlessChrome/156.0.x" or "Chrome/..."; Firefox over BiDi: "firefox/153.0esr".
  const v = String(raw).split('/').pop();
  return `${BROWSERS[platform].product} ${v}`;
}

async function startBrowser(req, t0) {
  state.server = await startServer(state.artefactDir);
  const port = state.server.address().port;
  const browser = await launchBrowser(req);
  state.browser = browser;
  const proc = browser.process();
  state.browserPid = proc ? proc.pid : null;
  watchdog.postMessage({ browserPid: state.browserPid });
  if (state.browserPid) state.rootPid = state.browserPid;
  browser.on('disconnected', () => {
    if (!state.browserExited) state.browserExited = `${req.platform} exited or closed its connection`;
  });
  const pages = await browser.pages();
  const page = pages.length ? pages[0] : await browser.newPage();
  state.page = page;
  page.on('pageerror', (e) => {
    const msg = e && e.message ? e.message : String(e);
    log(`page error: ${msg}`);
    state.pageErrors.push(msg);
  });
  page.on('console', (m) => {
    process.stderr.write(`[${req.platform} console.${m.type()}] ${m.text()}\n`);
  });
  page.on('requestfailed', (r) => log(`request failed: ${r.url()}`));
  await page.goto(`http://127.0.0.1:${port}/harness/index.html`, { waitUntil: 'load' });
  await page.waitForFunction('window.crossdl && window.crossdl.ready', { timeout: 30000 });
  const label = browserLabel(req.platform, await browser.version());
  const args = { ...startArgs(req), browser: label };
  const reply = JSON.parse(await page.evaluate((s) => window.crossdl.start(s), JSON.stringify(args)));
  if (!reply.ok) {
    const e = new Error(reply.error);
    e.unsupported = !!reply.unsupported;
    throw e;
  }
  delete reply.ok;
  return {
    browser: label,
    ...reply,
    browser_pid: state.browserPid,
    ms: performance.now() - t0,
  };
}

async function start(req) {
  if (state.started) throw new Error('start: this helper has already started a platform; start another helper');
  await checkStart(req);
  state.started = true;
  state.platform = req.platform;
  state.artefactDir = resolve(req.artefact_dir);
  state.artefactReal = realpathSync(state.artefactDir);
  const t0 = performance.now();
  state.peakMb = 0;
  state.sampler = setInterval(sample, 100);
  state.sampler.unref();
  try {
    return await (req.platform === 'node' ? startNode(req, t0) : startBrowser(req, t0));
  } catch (e) {
    // A start that failed leaves nothing behind: the next start may try again.
    await teardown();
    Object.assign(state, { started: false, platform: null, harness: null, libs: null, rootPid: process.pid,
      browserExited: null, pageErrors: [] });
    throw e;
  }
}

async function memory() {
  if (!state.started) throw new Error('memory: no platform started');
  const { mb, processes } = pssTree(state.rootPid);
  if (mb > state.peakMb) state.peakMb = mb;
  let heap = null;
  let source = null;
  if (state.platform === 'node') {
    heap = process.memoryUsage().heapUsed / 1048576;
    source = 'process.memoryUsage().heapUsed';
  } else {
    const r = await state.page.evaluate(async () => {
      if (typeof performance.measureUserAgentSpecificMemory === 'function' && self.crossOriginIsolated) {
        try {
          const m = await performance.measureUserAgentSpecificMemory();
          return { bytes: m.bytes, source: 'performance.measureUserAgentSpecificMemory' };
        } catch {
          // fall through
        }
      }
      if (performance.memory) return { bytes: performance.memory.usedJSHeapSize, source: 'performance.memory' };
      return null;
    });
    if (r) {
      heap = r.bytes / 1048576;
      source = r.source;
    }
  }
  return { pss_mb: mb, peak_pss_mb: state.peakMb, processes, js_heap_mb: heap, js_heap_source: source };
}

async function forward(req) {
  if (!state.started) throw new Error(`${req.op}: no platform started (send start first)`);
  if (state.platform === 'node') return state.harness.handle(state.libs, req);
  if (state.browserExited) throw new Error(state.browserExited);
  const reply = JSON.parse(await state.page.evaluate((s) => window.crossdl.handle(s), JSON.stringify(req)));
  if (!reply.ok) {
    const e = new Error(reply.error);
    e.unsupported = !!reply.unsupported;
    throw e;
  }
  delete reply.ok;
  return reply;
}

async function handle(req) {
  if (req === null || typeof req !== 'object') throw new Error('a request must be a JSON object');
  switch (req.op) {
    case 'hello':
      return {
        protocol: PROTOCOL,
        node_version: process.version,
        versions: {
          '@tensorflow/tfjs': version('@tensorflow/tfjs'),
          'onnxruntime-web': version('onnxruntime-web'),
          '@tensorflow/tfjs-tflite': version('@tensorflow/tfjs-tflite'),
          'puppeteer-core': version('puppeteer-core'),
        },
      };
    case 'start':
      return start(req);
    case 'memory':
      return memory();
    default:
      if (typeof req.op !== 'string') throw new Error('a request needs a string op');
      return forward(req);
  }
}

// ---------------------------------------------------------------------------------------------
// Shutdown: close the browser (killing its process group if it does not close in time), remove
// the profile, stop the server.

async function teardown() {
  if (state.sampler) clearInterval(state.sampler);
  state.sampler = null;
  if (state.browser) {
    const browser = state.browser;
    state.browser = null;
    state.page = null;
    // Firefox's forkserver children leave the browser's process group: remember the whole tree.
    const tree = state.browserPid ? treePids(state.browserPid) : [];
    const closed = browser.close().then(() => true, () => false);
    const timedOut = new Promise((ok) => setTimeout(() => ok(false), 5000).unref());
    const clean = await Promise.race([closed, timedOut]);
    // Whatever of its process group is left (a hung close, a child that outlived it) goes too.
    killTree(state.browserPid);
    for (const pid of tree) killTree(pid);
    if (!clean) log('the browser did not close in 5 s: its process group was killed');
  }
  state.browserPid = null;
  watchdog.postMessage({ browserPid: null });
  // A browser still launching (SIGTERM during start) has no recorded pid: every process this
  // helper started goes, so that its profile can be removed.
  for (const pid of treePids(process.pid)) if (pid !== process.pid) killTree(pid);
  if (state.server) state.server.close();
  state.server = null;
  if (state.profile) {
    try {
      rmSync(state.profile, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
    } catch (e) {
      log(`cannot remove profile ${state.profile}: ${e.message}`);
    }
  }
  state.profile = null;
}

let closing = null;
function shutdown() {
  if (!closing) closing = teardown();
  return closing;
}

// Last resort at exit (synchronous): kill the browser's group, remove the profile.
function killBrowserNow() {
  killTree(state.browserPid);
  if (state.profile) rmSync(state.profile, { recursive: true, force: true });
}

for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) {
  process.on(sig, () => {
    log(`${sig}: closing`);
    shutdown().finally(() => process.exit(128 + ({ SIGHUP: 1, SIGINT: 2, SIGTERM: 15 })[sig]));
  });
}
process.on('uncaughtException', (e) => {
  log(`uncaught: ${e && e.stack ? e.stack : e}`);
  shutdown().finally(() => process.exit(1));
});
process.on('unhandledRejection', (e) => {
  log(`unhandled rejection: ${e && e.stack ? e.stack : e}`);
  shutdown().finally(() => process.exit(1));
});
process.on('exit', killBrowserNow);

// The watchdog thread (web/helper-watchdog.mjs): cleans up when crossdl died and this thread is
// too busy to notice. unref(): it never keeps the helper alive.
const watchdog = new Worker(new URL('./helper-watchdog.mjs', import.meta.url),
                            { workerData: { parentPid: process.ppid }, stdout: false, stderr: false });
watchdog.unref();

async function main() {
  // A page error since the last reply fails this one, with its message.
  await serveJsonLines(handle, (reply) => {
    if (!state.pageErrors.length) return reply;
    const errors = state.pageErrors.splice(0);
    return { id: reply.id, ok: false, error: `page error: ${errors.join('; ')}` };
  });
  await shutdown();
}

main().then(
  () => process.exit(0),
  (e) => {
    log(`${e && e.stack ? e.stack : e}`);
    shutdown().finally(() => process.exit(1));
  });
