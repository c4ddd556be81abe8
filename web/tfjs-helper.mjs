// crossdl's TensorFlow.js helper: runs the layers models crossdl writes (model.json + weights.bin)
// with @tensorflow/tfjs on its pure-JavaScript cpu backend (@tensorflow/tfjs-node cannot be
// installed here). It speaks the JSON-lines protocol of web/ort-helper.mjs (docs/ort-protocol.md,
// section "tfjs"): one request per line on stdin, one reply per line on stdout, in order; stderr
// is free-form log. The C++ side is adapters/tfjs/tfjs_runtime.cpp. EOF on stdin disposes of the
// model and exits 0.
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';

const PROTOCOL = 1;
const BACKEND = 'cpu';
const require = createRequire(import.meta.url);

// stdout carries the protocol only: whatever TF.js prints (its "install tfjs-node" banner, kernel
// warnings) goes to stderr, where the client keeps it for error messages.
console.log = (...args) => console.error(...args);
console.info = (...args) => console.error(...args);
console.warn = (...args) => console.error(...args);

let tf = null;
let tfError = null;
try {
  tf = require('@tensorflow/tfjs');
} catch (e) {
  // Still answer hello, so that the probe can say what is missing instead of seeing a dead pipe.
  tfError = `cannot load @tensorflow/tfjs: ${e.message}`;
}

let backendReady = null;
async function ensureBackend() {
  if (tfError) throw new Error(tfError);
  if (!backendReady) {
    backendReady = (async () => {
      if (!(await tf.setBackend(BACKEND))) throw new Error(`the ${BACKEND} backend is unavailable`);
      await tf.ready();
    })();
  }
  await backendReady;
}

let model = null;

function decodeInput(spec) {
  if (spec === null || typeof spec !== 'object') throw new Error('run: input is not an object');
  if (!Array.isArray(spec.shape) || !spec.shape.every((d) => Number.isInteger(d) && d >= 0))
    throw new Error('run: input shape must be an array of non-negative integers');
  if (typeof spec.data !== 'string') throw new Error('run: input data must be a base64 string');
  const bytes = Buffer.from(spec.data, 'base64');
  const count = spec.shape.reduce((a, b) => a * b, 1);
  const width = spec.dtype === 'f32' ? 4 : spec.dtype === 'i64' ? 8 : 0;
  if (width === 0) throw new Error(`run: input dtype '${spec.dtype}' is not f32 or i64`);
  if (bytes.length !== count * width)
    throw new Error(`run: ${bytes.length} data bytes for shape [${spec.shape}], expected ${count * width}`);
  // Copy into an aligned buffer: a Buffer from base64 may start at any offset of its pool.
  const aligned = new ArrayBuffer(bytes.length);
  new Uint8Array(aligned).set(bytes);
  if (spec.dtype === 'f32') return tf.tensor(new Float32Array(aligned), spec.shape, 'float32');
  // TF.js has no int64 tensors: token ids are narrowed to int32, refusing any that do not fit.
  const wide = new BigInt64Array(aligned);
  const ids = new Int32Array(count);
  for (let i = 0; i < count; ++i) {
    if (wide[i] < -2147483648n || wide[i] > 2147483647n)
      throw new Error(`run: token id ${wide[i]} at index ${i} does not fit int32`);
    ids[i] = Number(wide[i]);
  }
  return tf.tensor(ids, spec.shape, 'int32');
}

async function encodeOutput(t) {
  if (t.dtype !== 'float32') throw new Error(`output of dtype ${t.dtype} cannot be returned`);
  const d = await t.data();
  return {
    dtype: 'f32',
    shape: t.shape.slice(),
    data: Buffer.from(d.buffer, d.byteOffset, d.byteLength).toString('base64'),
  };
}

async function load(req) {
  if (typeof req.path !== 'string') throw new Error('load: path must be a string');
  const threads = req.threads ?? 1;
  if (threads !== 1)
    throw new Error(`load: threads=${threads}: the ${BACKEND} backend runs single-threaded JavaScript`);
  await ensureBackend();
  if (model) {
    model.dispose();
    model = null;
  }
  const t0 = performance.now();
  const json = JSON.parse(readFileSync(req.path, 'utf8'));
  const weightSpecs = [];
  const parts = [];
  for (const group of json.weightsManifest ?? []) {
    weightSpecs.push(...group.weights);
    for (const p of group.paths) parts.push(readFileSync(resolve(dirname(req.path), p)));
  }
  const all = Buffer.concat(parts);
  const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
  model = await tf.loadLayersModel(
      tf.io.fromMemory({ modelTopology: json.modelTopology, weightSpecs, weightData }));
  const ms = performance.now() - t0;
  return {
    inputs: model.inputNames,
    outputs: model.outputNames,
    backend: tf.getBackend(),
    threads: 1,
    ms,
  };
}

async function run(req) {
  if (!model) throw new Error('run: no model loaded');
  const x = decodeInput(req.input);
  const names = req.outputs ?? model.outputNames;
  const missing = names.filter((n) => !model.outputNames.includes(n));
  if (missing.length)
    throw new Error(`run: the model has no output(s) ${missing.join(', ')} ` +
                    `(it has ${model.outputNames.join(', ')})`);
  try {
    const t0 = performance.now();
    let ys = model.predict(x, { batchSize: x.shape[0] });
    if (!Array.isArray(ys)) ys = [ys];
    // predict is lazy on some backends: reading the wanted values is part of the timed run.
    const values = {};
    for (const n of names) values[n] = await encodeOutput(ys[model.outputNames.indexOf(n)]);
    const ms = performance.now() - t0;
    tf.dispose(ys);
    return { outputs: values, ms };
  } finally {
    x.dispose();
  }
}

async function handle(req) {
  switch (req.op) {
    case 'hello':
      await ensureBackend();
      return {
        protocol: PROTOCOL,
        tfjs_version: tf.version.tfjs,
        backend: tf.getBackend(),
        node_version: process.version,
      };
    case 'load':
      return load(req);
    case 'run':
      return run(req);
    default:
      throw new Error(`unknown op '${req.op}'`);
  }
}

async function main() {
  const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of rl) {
    if (line.trim() === '') continue;
    let req;
    try {
      req = JSON.parse(line);
    } catch (e) {
      process.stdout.write(JSON.stringify({ id: null, ok: false, error: `bad JSON: ${e.message}` }) + '\n');
      continue;
    }
    const id = req && Number.isInteger(req.id) ? req.id : null;
    let reply;
    try {
      reply = { id, ok: true, ...(await handle(req)) };
    } catch (e) {
      reply = { id, ok: false, error: String(e && e.message ? e.message : e) };
    }
    process.stdout.write(JSON.stringify(reply) + '\n');
  }
  if (model) model.dispose();
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`tfjs-helper: ${e && e.stack ? e.stack : e}\n`);
    process.exit(1);
  });
