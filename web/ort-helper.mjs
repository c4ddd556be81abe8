// crossdl's ONNX Runtime helper: onnxruntime-node ships its shared library but no C/C++ headers,
// so crossdl drives it through this long-lived Node process. One JSON object per line on stdin,
// one reply per line on stdout, in order; stderr is free-form log. docs/ort-protocol.md is the
// contract; the C++ side is adapters/ort/ort_runtime.cpp.
//
// Requests are handled strictly one after another (the C++ side waits for each reply), so a
// reply's id always answers the oldest unanswered request. EOF on stdin releases the session and
// exits 0.
import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';

import { serveJsonLines } from './json-lines.mjs';

const PROTOCOL = 1;
const require = createRequire(import.meta.url);

let ort = null;
let ortError = null;
try {
  ort = require('onnxruntime-node');
} catch (e) {
  // Still answer hello, so that the probe can say what is missing instead of seeing a dead pipe.
  ortError = `cannot load onnxruntime-node: ${e.message}`;
}

function ortVersion() {
  if (!ort) return '';
  return (ort.env && ort.env.versions && ort.env.versions.node) ||
      require('onnxruntime-node/package.json').version;
}

const DTYPES = {
  f32: { ort: 'float32', array: Float32Array },
  i64: { ort: 'int64', array: BigInt64Array },
};

let session = null;
let wanted = [];  // output names the last load asked for, in its order

function decodeTensor(spec, what) {
  if (spec === null || typeof spec !== 'object') throw new Error(`${what}: not an object`);
  const dt = DTYPES[spec.dtype];
  if (!dt) throw new Error(`${what}: dtype '${spec.dtype}' is not one of ${Object.keys(DTYPES)}`);
  if (!Array.isArray(spec.shape) || !spec.shape.every((d) => Number.isInteger(d) && d >= 0))
    throw new Error(`${what}: shape must be an array of non-negative integers`);
  if (typeof spec.data !== 'string') throw new Error(`${what}: data must be a base64 string`);
  const bytes = Buffer.from(spec.data, 'base64');
  const count = spec.shape.reduce((a, b) => a * b, 1);
  const expect = count * dt.array.BYTES_PER_ELEMENT;
  if (bytes.length !== expect)
    throw new Error(`${what}: ${bytes.length} data bytes for shape [${spec.shape}], expected ${expect}`);
  // Copy into an aligned buffer: a Buffer from base64 may start at any offset of its pool.
  const aligned = new ArrayBuffer(expect);
  new Uint8Array(aligned).set(bytes);
  return new ort.Tensor(dt.ort, new dt.array(aligned), spec.shape);
}

function encodeTensor(t) {
  const dtype = t.type === 'float32' ? 'f32' : t.type === 'int64' ? 'i64' : null;
  if (dtype === null) throw new Error(`output of type ${t.type} cannot be returned`);
  const d = t.data;
  return {
    dtype,
    shape: Array.from(t.dims),
    data: Buffer.from(d.buffer, d.byteOffset, d.byteLength).toString('base64'),
  };
}

const LEVELS = new Set(['disabled', 'basic', 'extended', 'layout', 'all']);

async function handle(req) {
  switch (req.op) {
    case 'hello':
      if (ortError) throw new Error(ortError);
      return { protocol: PROTOCOL, ort_version: ortVersion(), node_version: process.version };
    case 'load': {
      if (ortError) throw new Error(ortError);
      if (typeof req.path !== 'string') throw new Error('load: path must be a string');
      const threads = req.threads ?? 1;
      if (!Number.isInteger(threads) || threads < 1) throw new Error('load: threads must be >= 1');
      const level = req.graph_optimization_level ?? 'all';
      if (!LEVELS.has(level)) throw new Error(`load: unknown graph_optimization_level '${level}'`);
      if (session) {
        await session.release();
        session = null;
      }
      const t0 = performance.now();
      session = await ort.InferenceSession.create(req.path, {
        executionProviders: ['cpu'],
        intraOpNumThreads: threads,
        interOpNumThreads: threads,
        executionMode: 'sequential',
        graphOptimizationLevel: level,
      });
      const ms = performance.now() - t0;
      const outputs = req.outputs ?? [];
      const missing = outputs.filter((n) => !session.outputNames.includes(n));
      if (missing.length)
        throw new Error(`load: the model has no output(s) ${missing.join(', ')} ` +
                        `(it has ${session.outputNames.join(', ')})`);
      wanted = outputs.length ? outputs : session.outputNames.slice();
      return {
        inputs: session.inputNames,
        outputs: session.outputNames,
        threads,
        graph_optimization_level: level,
        ms,
      };
    }
    case 'run': {
      if (!session) throw new Error('run: no model loaded');
      if (session.inputNames.length !== 1)
        throw new Error(`run: the model has ${session.inputNames.length} inputs; one is supported`);
      const feeds = { [session.inputNames[0]]: decodeTensor(req.input, 'run: input') };
      const names = req.outputs ?? wanted;
      const t0 = performance.now();
      const res = await session.run(feeds, names);
      const ms = performance.now() - t0;
      const outputs = {};
      for (const n of names) outputs[n] = encodeTensor(res[n]);
      return { outputs, ms };
    }
    default:
      throw new Error(`unknown op '${req.op}'`);
  }
}

async function main() {
  await serveJsonLines(handle);
  if (session) await session.release();
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`ort-helper: ${e && e.stack ? e.stack : e}\n`);
    process.exit(1);
  });
