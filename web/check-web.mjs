// Standalone smoke check of web/web-helper.mjs: for each runtime:backend@platform it starts a
// helper, loads an artefact of one model, runs the same seeded random inputs, times batch-1
// runs and reads memory; then it compares every combination's outputs with the first one that
// ran. Prints a Markdown matrix (docs/web-protocol.md keeps the measured one).
//
//   node web/check-web.mjs [--cmp /tmp/webdev/lenet5-cmp] [--model lenet5] [--n 4]
//                          [--only tfjs:cpu@chromium,ort-web:wasm@node] [--threads 1]
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HELPER = join(dirname(fileURLToPath(import.meta.url)), 'web-helper.mjs');

const argv = process.argv.slice(2);
function opt(name, dflt) {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : dflt;
}
const CMP = opt('cmp', '/tmp/webdev/lenet5-cmp');
const MODEL = opt('model', 'lenet5');
const N = Number(opt('n', '4'));
const THREADS = Number(opt('threads', '1'));
const ONLY = opt('only', null);
const TIMEOUT_MS = Number(opt('timeout', '180000'));

const COMBOS = [];
for (const platform of ['node', 'chromium', 'firefox']) {
  for (const b of ['cpu', 'wasm', 'webgl', 'webgpu']) COMBOS.push({ runtime: 'tfjs', backend: b, platform });
  for (const b of ['wasm', 'webgl', 'webgpu']) COMBOS.push({ runtime: 'ort-web', backend: b, platform });
  COMBOS.push({ runtime: 'tflite-web', backend: 'wasm', platform });
}
const ARTEFACT = {
  'tfjs': { dir: `${CMP}/tfjs/artefact`, file: 'model.json', layout: 'nhwc' },
  'ort-web': { dir: `${CMP}/ort/artefact`, file: `${MODEL}.onnx`, layout: 'nchw' },
  'tflite-web': { dir: `${CMP}/tflite/artefact`, file: `${MODEL}.tflite`, layout: 'nhwc' },
};

// Seeded inputs in [0,1): one [N,28,28] image set; with one channel NCHW and NHWC hold the same bytes.
function inputs(n) {
  let s = 12345;
  const v = new Float32Array(n * 28 * 28);
  for (let i = 0; i < v.length; ++i) {
    s = (s * 1103515245 + 12345) % 2147483648;
    v[i] = s / 2147483648;
  }
  return v;
}
function tensor(shape, f32) {
  return { dtype: 'f32', shape, data: Buffer.from(f32.buffer, f32.byteOffset, f32.byteLength).toString('base64') };
}
function values(t) {
  const b = Buffer.from(t.data, 'base64');
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

class Helper {
  constructor() {
    this.proc = spawn(process.execPath, [HELPER], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.lines = createInterface({ input: this.proc.stdout })[Symbol.asyncIterator]();
    this.err = '';
    this.proc.stderr.on('data', (d) => {
      this.err += d;
      if (this.err.length > 20000) this.err = this.err.slice(-20000);
    });
    this.id = 0;
  }
  async req(op, fields = {}) {
    const id = ++this.id;
    this.proc.stdin.write(JSON.stringify({ id, op, ...fields }) + '\n');
    let timer;
    const timeout = new Promise((_, bad) => {
      timer = setTimeout(() => bad(new Error(`${op}: no reply in ${TIMEOUT_MS} ms`)), TIMEOUT_MS);
    });
    try {
      const { value, done } = await Promise.race([this.lines.next(), timeout]);
      if (done) throw new Error(`${op}: helper exited; stderr: ${this.err.slice(-2000)}`);
      const r = JSON.parse(value);
      if (r.id !== id) throw new Error(`${op}: reply id ${r.id}, expected ${id}`);
      return r;
    } finally {
      clearTimeout(timer);
    }
  }
  async close() {
    this.proc.stdin.end();
    const t0 = Date.now();
    await new Promise((ok) => {
      const kill = setTimeout(() => this.proc.kill('SIGKILL'), 15000);
      this.proc.on('exit', () => {
        clearTimeout(kill);
        ok();
      });
    });
    return Date.now() - t0;
  }
}

const x = inputs(N);
const rows = [];
let reference = null;

for (const c of COMBOS) {
  const name = `${c.runtime}:${c.backend}@${c.platform}`;
  if (ONLY && !ONLY.split(',').includes(name)) continue;
  const a = ARTEFACT[c.runtime];
  const shape = a.layout === 'nhwc' ? [N, 28, 28, 1] : [N, 1, 28, 28];
  const h = new Helper();
  const row = { name, status: '', start: '', load: '', run: '', time: '', diff: '', memory: '', device: '' };
  try {
    const hello = await h.req('hello', { protocol: 1 });
    if (!hello.ok) throw new Error(hello.error);
    const st = await h.req('start', { ...c, artefact_dir: a.dir, threads: THREADS });
    if (!st.ok) {
      row.status = st.unsupported ? 'unsupported' : 'FAIL';
      row.device = st.error;
    } else {
      row.start = st.ms.toFixed(0);
      row.device = `${st.browser}; backend ${st.backend}; ${st.device}; isolated ${st.cross_origin_isolated}; ` +
          `timer ${st.timer_resolution_ms}`;
      const ld = await h.req('load', { file: a.file });
      if (!ld.ok) throw Object.assign(new Error(ld.error), { unsupported: ld.unsupported });
      row.load = ld.ms.toFixed(0);
      const out = ld.outputs[ld.outputs.length - 1];
      const run = await h.req('run', { input: tensor(shape, x), outputs: [out] });
      if (!run.ok) throw Object.assign(new Error(run.error), { unsupported: run.unsupported });
      row.run = run.ms.toFixed(1);
      const y = values(run.outputs[out]);
      if (y.length !== N * 10 || y.some((v) => !Number.isFinite(v)))
        throw new Error(`output ${out}: ${y.length} values, shape [${run.outputs[out].shape}]`);
      if (!reference) reference = { name, y };
      let d = 0;
      for (let i = 0; i < y.length; ++i) d = Math.max(d, Math.abs(y[i] - reference.y[i]));
      row.diff = d.toExponential(1);
      const tm = await h.req('time', { input: tensor(shape, x), warmup: 2 });
      if (!tm.ok) throw new Error(tm.error);
      const sorted = tm.ms.slice().sort((p, q) => p - q);
      row.time = sorted[Math.floor(sorted.length / 2)].toFixed(2);
      const mem = await h.req('memory');
      if (!mem.ok) throw new Error(mem.error);
      row.memory = `${mem.pss_mb.toFixed(0)} (peak ${mem.peak_pss_mb.toFixed(0)}, ${mem.processes} proc, heap ` +
          `${mem.js_heap_mb === null ? 'null' : mem.js_heap_mb.toFixed(1)})`;
      row.status = d <= 1e-4 ? 'ok' : 'DIFF';
    }
  } catch (e) {
    row.status = e.unsupported ? 'unsupported' : 'FAIL';
    row.device = `${row.device} ${e.message}`.trim();
  }
  const closeMs = await h.close();
  if (process.env.CHECK_WEB_VERBOSE) process.stderr.write(h.err);
  process.stderr.write(`${name}: ${row.status} (closed in ${closeMs} ms) ${row.device}\n`);
  rows.push(row);
}

console.log(`reference: ${reference ? reference.name : 'none'}; ${N} seeded random inputs; model ${MODEL}; threads ${THREADS}\n`);
console.log('| runtime | result | start ms | load ms | run ms (batch ' + N + ') | batch-1 p50 ms | max abs diff | PSS MB | what ran |');
console.log('|---|---|---|---|---|---|---|---|---|');
for (const r of rows)
  console.log(`| ${r.name} | ${r.status} | ${r.start} | ${r.load} | ${r.run} | ${r.time} | ${r.diff} | ${r.memory} | ${r.device.replace(/\|/g, '/')} |`);
const bad = rows.filter((r) => r.status === 'FAIL' || r.status === 'DIFF');
process.exit(bad.length ? 1 : 0);
