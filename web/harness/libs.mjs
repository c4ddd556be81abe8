// Loads and initialises the library a web runtime needs (TF.js, ONNX Runtime Web, TFLite for the
// web) on one backend, in a browser page or in Node, and says what really runs: the backend the
// library reports, the device (WebGL renderer, WebGPU adapter, wasm SIMD and threads), whether the
// page is cross-origin isolated and the timer's resolution. Shared by the page (web/harness/page.mjs)
// and Node (web/web-helper.mjs); each passes a `host` that knows how to load a library there.
//
// host: { platform: 'node'|'chromium'|'firefox', browser: 'Chromium 156...'|'Node v20...',
//         load(name) -> library ('tfjs', 'tfjs-wasm', 'tfjs-webgpu', 'ort', 'tflite'),
//         wasmPaths: {tfjs, ort, tflite} URL prefixes in a page, null in Node,
//         fetchBytes(file) -> Uint8Array of an artefact file }

// A combination that cannot run here: replies carry "unsupported": true and crossdl records a
// skip with the message as its reason.
export class Unsupported extends Error {
  constructor(msg) {
    super(msg);
    this.unsupported = true;
  }
}

export const BACKENDS = {
  'tfjs': ['cpu', 'wasm', 'webgl', 'webgpu'],
  'tfjs-train': ['cpu', 'wasm', 'webgl', 'webgpu'],
  'ort-web': ['wasm', 'webgl', 'webgpu'],
  'tflite-web': ['wasm'],
};

// Smallest non-zero step of performance.now() seen in up to 50 ms of polling.
export function timerResolution() {
  let min = Infinity;
  let last = performance.now();
  const end = last + 50;
  for (let i = 0; i < 1000000; ++i) {
    const t = performance.now();
    if (t !== last) {
      if (t - last < min) min = t - last;
      last = t;
      if (t > end) break;
    }
  }
  // Rounded to 0.1 ns: the difference of two doubles carries float noise.
  return Number.isFinite(min) ? Math.round(min * 1e7) / 1e7 : null;
}

function softwareLabel(s) {
  return /swiftshader|llvmpipe|softpipe|software|basic render/i.test(s) ? `${s} (software)` : s;
}

// A 1-function module using a v128 instruction: validates only where wasm SIMD exists.
const SIMD_PROBE = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0,
  10, 10, 1, 8, 0, 65, 0, 253, 15, 253, 98, 11]);

function wasmFeatures() {
  let simd = false;
  try {
    simd = WebAssembly.validate(SIMD_PROBE);
  } catch {
    simd = false;
  }
  const sab = typeof SharedArrayBuffer === 'function';
  const isolated = globalThis.crossOriginIsolated ?? (typeof window === 'undefined');
  return { simd, threads: sab && isolated };
}

function probeWebGL(where) {
  if (typeof document === 'undefined' && typeof OffscreenCanvas === 'undefined')
    throw new Unsupported(`WebGL needs a browser: ${where} has no canvas`);
  const canvas = typeof OffscreenCanvas !== 'undefined' ? new OffscreenCanvas(1, 1) : document.createElement('canvas');
  let version = 'WebGL2';
  let gl = canvas.getContext('webgl2');
  if (!gl) {
    version = 'WebGL1';
    gl = canvas.getContext('webgl');
  }
  if (!gl) throw new Unsupported(`${where} gives no WebGL context (getContext('webgl2') and 'webgl' returned null)`);
  const ext = gl.getExtension('WEBGL_debug_renderer_info');
  const renderer = ext ? gl.getParameter(ext.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER);
  const lose = gl.getExtension('WEBGL_lose_context');
  if (lose) lose.loseContext();
  return { version, renderer: String(renderer), label: `${version} on ${softwareLabel(String(renderer))}` };
}

async function probeWebGPU(where) {
  if (typeof navigator === 'undefined' || !navigator.gpu)
    throw new Unsupported(`${where} has no WebGPU (navigator.gpu is missing)`);
  const adapter = await navigator.gpu.requestAdapter();
  if (!adapter) throw new Unsupported(`${where}: navigator.gpu.requestAdapter() returned null (no WebGPU adapter)`);
  let info = adapter.info;
  if (!info && typeof adapter.requestAdapterInfo === 'function') info = await adapter.requestAdapterInfo();
  info = info ?? {};
  const parts = [info.vendor, info.architecture, info.device, info.description].filter((s) => s);
  const text = parts.length ? [...new Set(parts)].join(' ') : 'an adapter that gives no info';
  return {
    info: { vendor: info.vendor ?? '', architecture: info.architecture ?? '', device: info.device ?? '',
      description: info.description ?? '', fallback: !!(adapter.isFallbackAdapter ?? info.isFallbackAdapter) },
    label: `WebGPU on ${softwareLabel(text)}`,
  };
}

function threadsWord(n) {
  return `${n} thread${n === 1 ? '' : 's'}`;
}

async function initTfjs(host, libs, backend, threads) {
  const tf = await host.load('tfjs');
  libs.tf = tf;
  let device = null;
  if (backend === 'wasm') {
    const wasm = await host.load('tfjs-wasm');
    if (host.wasmPaths) wasm.setWasmPaths(host.wasmPaths.tfjs);
    wasm.setThreadsCount(threads);
  } else if (backend === 'webgpu') {
    await host.load('tfjs-webgpu');
  }
  if (!(await tf.setBackend(backend))) {
    const why = `TF.js could not initialise its ${backend} backend in ${host.browser}`;
    if (backend === 'webgl' || backend === 'webgpu') throw new Unsupported(why);
    throw new Error(why);
  }
  await tf.ready();
  const active = tf.getBackend();
  if (active !== backend) throw new Error(`TF.js runs on '${active}', not the requested '${backend}'`);
  let actualThreads = threads;
  if (backend === 'wasm') {
    const simd = await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT');
    const mt = await tf.env().getAsync('WASM_HAS_MULTITHREAD_SUPPORT');
    const wasm = await host.load('tfjs-wasm');
    actualThreads = typeof wasm.getThreadsCount === 'function' ? wasm.getThreadsCount() : (mt ? threads : 1);
    if (actualThreads !== threads) {
      // tfjs-backend-wasm caps its XNNPACK pool at min(8, navigator.hardwareConcurrency / 2)
      // threads, and runs 1 where the threaded build cannot load.
      const cores = typeof navigator !== 'undefined' ? navigator.hardwareConcurrency : undefined;
      throw new Unsupported(`TF.js wasm in ${host.browser} runs ${threadsWord(actualThreads)}, not the ` +
                            `requested ${threads} (multithread build: ${mt}; it caps threads at ` +
                            `hardwareConcurrency/2${cores ? ` = ${Math.floor(cores / 2)} here` : ''}, at most 8)`);
    }
    device = `wasm ${simd ? 'simd' : 'without simd'}, ${threadsWord(actualThreads)}`;
  } else if (backend === 'cpu') {
    device = 'cpu (JavaScript)';
  }
  return { backend: active, device, threads: actualThreads };
}

async function initOrt(host, libs, backend, threads) {
  const ort = await host.load('ort');
  libs.ort = ort;
  if (host.wasmPaths) ort.env.wasm.wasmPaths = host.wasmPaths.ort;
  ort.env.wasm.numThreads = threads;
  ort.env.wasm.proxy = false;
  ort.env.logLevel = 'error';
  let device = null;
  if (backend === 'wasm') {
    const f = wasmFeatures();
    if (threads > 1 && !f.threads)
      throw new Unsupported(`ONNX Runtime Web in ${host.browser} cannot run ${threads} threads ` +
                            '(no SharedArrayBuffer or the page is not cross-origin isolated)');
    device = `wasm ${f.simd ? 'simd' : 'without simd'}, ${threadsWord(threads)}`;
  }
  // ONNX Runtime Web initialises its wasm and the execution provider at the first session; the
  // load op creates it with exactly this provider (no fallback), so a provider that cannot run
  // fails there.
  return { backend, device, threads };
}

async function initTflite(host, libs, backend, threads) {
  libs.tf = await host.load('tfjs');
  const tflite = await host.load('tflite');
  libs.tflite = tflite;
  if (host.wasmPaths) tflite.setWasmPath(host.wasmPaths.tflite);
  const f = wasmFeatures();
  if (threads > 1 && !f.threads)
    throw new Unsupported(`TFLite web in ${host.browser} cannot run ${threads} threads ` +
                          '(no SharedArrayBuffer or the page is not cross-origin isolated)');
  return { backend, device: `wasm ${f.simd ? 'simd' : 'without simd'}, ${threadsWord(threads)}`, threads };
}

// Returns {libs, reply}: libs for harness.handle, reply fields for the start op.
export async function initLibs(host, { runtime, backend, threads = 1 }) {
  const where = host.browser;
  if (!(runtime in BACKENDS)) throw new Error(`start: runtime '${runtime}' is not one of ${Object.keys(BACKENDS).join(', ')}`);
  if (!BACKENDS[runtime].includes(backend))
    throw new Error(`start: backend '${backend}' is not one of ${runtime}'s (${BACKENDS[runtime].join(', ')})`);
  if (!Number.isInteger(threads) || threads < 1) throw new Error('start: threads must be an integer >= 1');
  if (host.platform === 'node') {
    if (runtime === 'tflite-web')
      throw new Unsupported(`tflite-web runs in browsers only: @tensorflow/tfjs-tflite ships its TFLite wasm ` +
                            `runtime for pages, not for ${where}`);
    if (backend === 'webgl' || backend === 'webgpu')
      throw new Unsupported(`${runtime}:${backend} needs a browser: ${where} has no ${backend === 'webgl' ? 'WebGL' : 'WebGPU'}`);
  }
  if (threads > 1 && backend !== 'wasm')
    throw new Unsupported(`threads=${threads}: ${runtime}:${backend} has no thread setting (only wasm backends run threads)`);
  let gl = null;
  let gpu = null;
  if (backend === 'webgl') gl = probeWebGL(where);
  if (backend === 'webgpu') gpu = await probeWebGPU(where);

  const libs = { platform: host.platform, runtime, backend, threads, fetchBytes: host.fetchBytes,
    tf: null, ort: null, tflite: null };
  let r;
  if (runtime === 'tfjs' || runtime === 'tfjs-train') r = await initTfjs(host, libs, backend, threads);
  else if (runtime === 'ort-web') r = await initOrt(host, libs, backend, threads);
  else r = await initTflite(host, libs, backend, threads);

  const reply = {
    backend: r.backend,
    device: r.device ?? (gl ? gl.label : gpu ? gpu.label : backend),
    cross_origin_isolated: globalThis.crossOriginIsolated ?? null,
    timer_resolution_ms: timerResolution(),
    threads: r.threads,
    wasm: wasmFeatures(),
  };
  if (gl) reply.webgl = { version: gl.version, renderer: gl.renderer };
  if (gpu) reply.webgpu = gpu.info;
  return { libs, reply };
}
