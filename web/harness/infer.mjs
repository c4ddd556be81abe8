// Inference ops (load, run, time) for tfjs, ort-web and tflite-web, in a page or in Node.
// Inputs arrive in the artefact's own layout (NHWC for tfjs and tflite-web, NCHW for ort-web: the
// C++ side converts); outputs go back as f32 tensors keyed by output name: the layers model's
// output names for tfjs, the graph output names for ort-web, the TFLite output tensor names for
// tflite-web. Times are performance.now() differences taken here, values read back included.
import { decodeTensor, encodeF32, sampleOf, toInt32 } from './tensor.mjs';
import { fixInputDims, hasSymbolicInput } from './onnx-shape.mjs';

const decoder = new TextDecoder();

function checkNames(what, wanted, have) {
  const missing = wanted.filter((n) => !have.includes(n));
  if (missing.length)
    throw new Error(`${what}: the model has no output(s) ${missing.join(', ')} (it has ${have.join(', ')})`);
}

function fileOf(req) {
  if (typeof req.file !== 'string' || req.file === '') throw new Error('load: file must be a non-empty string');
  return req.file;
}

// ---------------------------------------------------------------------------------------------
// TF.js layers models (model.json + weights).

const tfjs = {
  model: null,

  async load(libs, req) {
    const { tf } = libs;
    const file = fileOf(req);
    if (this.model) {
      this.model.dispose();
      this.model = null;
    }
    const t0 = performance.now();
    let json;
    try {
      json = JSON.parse(decoder.decode(await libs.fetchBytes(file)));
    } catch (e) {
      throw new Error(`load: ${file} is not a TF.js model.json: ${e.message}`);
    }
    if (!json.modelTopology) throw new Error(`load: ${file} has no modelTopology (not a TF.js layers model)`);
    const dir = file.includes('/') ? file.slice(0, file.lastIndexOf('/') + 1) : '';
    const weightSpecs = [];
    const parts = [];
    for (const group of json.weightsManifest ?? []) {
      weightSpecs.push(...group.weights);
      for (const p of group.paths) parts.push(await libs.fetchBytes(dir + p));
    }
    const total = parts.reduce((a, p) => a + p.byteLength, 0);
    const all = new Uint8Array(total);
    let at = 0;
    for (const p of parts) {
      all.set(p, at);
      at += p.byteLength;
    }
    this.model = await tf.loadLayersModel(
        tf.io.fromMemory({ modelTopology: json.modelTopology, weightSpecs, weightData: all.buffer }));
    const ms = performance.now() - t0;
    return { inputs: this.model.inputNames, outputs: this.model.outputNames, ms };
  },

  prepare(libs, t) {
    const { tf } = libs;
    if (t.dtype === 'f32') return tf.tensor(t.data, t.shape, 'float32');
    return tf.tensor(toInt32(t, 'input'), t.shape, 'int32');
  },

  // Runs on a prepared input tensor; returns {name: {shape, values}} of the wanted outputs.
  async infer(libs, x, names) {
    const { tf } = libs;
    let ys = this.model.predict(x, { batchSize: x.shape[0] });
    if (!Array.isArray(ys)) ys = [ys];
    try {
      const out = {};
      for (const n of names) {
        const y = ys[this.model.outputNames.indexOf(n)];
        if (y.dtype !== 'float32') throw new Error(`output ${n} has dtype ${y.dtype}, not float32`);
        out[n] = { shape: y.shape.slice(), values: await y.data() };
      }
      return out;
    } finally {
      tf.dispose(ys);
    }
  },

  release(libs, x) {
    libs.tf.dispose(x);
  },

  outputNames() {
    return this.model.outputNames;
  },
};

// ---------------------------------------------------------------------------------------------
// ONNX Runtime Web (wasm, webgl, webgpu execution providers; exactly the one asked for).

// ONNX Runtime Web's WebGL backend (its onnxjs engine) reads a symbolic input dimension
// (dim_param, e.g. the dynamic batch crossdl's ONNX files have) as null and refuses every input
// shape ("input tensor[0] check failed: expected shape '[,1,28,28]'"); it also keeps the first
// run's input shape for good. So on webgl a model with a symbolic input runs, per input shape, a
// session on a copy whose symbolic input dims are fixed to that shape (onnx-shape.mjs: nothing
// else changes), created outside the timed part; the last few are kept.
const WEBGL_SESSIONS = 4;

const ortWeb = {
  session: null,
  bytes: null,
  byShape: new Map(),

  async releaseAll() {
    for (const s of this.byShape.values()) await s.release();
    this.byShape.clear();
    if (this.session) await this.session.release();
    this.session = null;
    this.bytes = null;
  },

  options(libs) {
    return { executionProviders: [libs.backend], graphOptimizationLevel: 'all', executionMode: 'sequential' };
  },

  async load(libs, req) {
    const { ort } = libs;
    const file = fileOf(req);
    await this.releaseAll();
    const t0 = performance.now();
    const bytes = await libs.fetchBytes(file);
    this.session = await ort.InferenceSession.create(bytes, this.options(libs));
    if (libs.backend === 'webgl' && hasSymbolicInput(bytes)) this.bytes = bytes;
    const ms = performance.now() - t0;
    // ONNX Runtime Web drops to 1 thread at its first session where threads cannot run.
    const threads = ort.env.wasm.numThreads;
    if (libs.backend === 'wasm' && threads !== libs.threads)
      throw new Error(`ONNX Runtime Web runs ${threads} thread(s), not the requested ${libs.threads}`);
    const reply = { inputs: this.session.inputNames, outputs: this.session.outputNames, ms };
    if (this.bytes) reply.note = 'webgl: symbolic input dims are fixed per input shape (one session per shape)';
    return reply;
  },

  async sessionFor(libs, shape) {
    if (!this.bytes) return this.session;
    const key = shape.join(',');
    let s = this.byShape.get(key);
    if (s) {
      this.byShape.delete(key);  // most recently used last
    } else {
      const { bytes } = fixInputDims(this.bytes, { [this.session.inputNames[0]]: shape });
      s = await libs.ort.InferenceSession.create(bytes, this.options(libs));
      if (this.byShape.size >= WEBGL_SESSIONS) {
        const [oldKey, old] = this.byShape.entries().next().value;
        this.byShape.delete(oldKey);
        await old.release();
      }
    }
    this.byShape.set(key, s);
    return s;
  },

  async prepare(libs, t) {
    if (this.session.inputNames.length !== 1)
      throw new Error(`run: the model has ${this.session.inputNames.length} inputs; one is supported`);
    const { ort } = libs;
    const type = t.dtype === 'f32' ? 'float32' : t.dtype === 'i64' ? 'int64' : 'int32';
    return { tensor: new ort.Tensor(type, t.data, t.shape), session: await this.sessionFor(libs, t.shape) };
  },

  async infer(libs, x, names) {
    let res;
    try {
      res = await x.session.run({ [x.session.inputNames[0]]: x.tensor }, names);
    } catch (e) {
      const msg = String(e && e.message ? e.message : e);
      // ONNX Runtime Web's WebGL backend (the onnxjs engine) reads a symbolic dimension
      // (dim_param, e.g. a dynamic batch) as null and then refuses every input shape.
      if (libs.backend === 'webgl' && /expected shape '[^']*(\[,|,,|,\])/.test(msg))
        throw new Error(`${msg} (ONNX Runtime Web's WebGL backend rejects every input of a graph input ` +
                        'with a symbolic dimension such as a dynamic batch)');
      throw e;
    }
    const out = {};
    for (const n of names) {
      const y = res[n];
      if (y.type !== 'float32') throw new Error(`output ${n} has type ${y.type}, not float32`);
      const values = y.location && y.location !== 'cpu' ? await y.getData(true) : y.data;
      out[n] = { shape: Array.from(y.dims), values };
      if (y.dispose) y.dispose();
    }
    return out;
  },

  release(libs, x) {
    if (x.tensor.dispose) x.tensor.dispose();
  },

  outputNames() {
    return this.session.outputNames;
  },
};

// ---------------------------------------------------------------------------------------------
// TFLite for the web (@tensorflow/tfjs-tflite's wasm model runner, browser only). The runner's
// own buffers are read and written directly: outputs are named by their TFLite tensor names, for
// single- and multi-output models alike.

const tfliteWeb = {
  model: null,
  runner: null,

  async load(libs, req) {
    const { tflite } = libs;
    const file = fileOf(req);
    this.model = null;
    this.runner = null;
    const t0 = performance.now();
    const bytes = await libs.fetchBytes(file);
    const buf = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
    this.model = await tflite.loadTFLiteModel(buf, { numThreads: libs.threads });
    this.runner = this.model.modelRunner;
    const ms = performance.now() - t0;
    return {
      inputs: this.runner.getInputs().map((t) => t.name),
      outputs: this.runner.getOutputs().map((t) => t.name),
      ms,
    };
  },

  // The runner's input shape is fixed (tfjs-tflite has no resize): a batch of B samples on a
  // batch-1 model runs as B invocations, outputs concatenated along the first axis.
  prepare(libs, t) {
    const ins = this.runner.getInputs();
    if (ins.length !== 1) throw new Error(`run: the model has ${ins.length} inputs; one is supported`);
    const info = ins[0];
    const shape = info.shape.split(',').map(Number);
    const same = (a, b) => a.length === b.length && a.every((d, i) => d === b[i]);
    let batch = 1;
    if (!same(shape, t.shape)) {
      if (shape[0] === 1 && t.shape.length === shape.length && same(shape.slice(1), t.shape.slice(1))) batch = t.shape[0];
      else throw new Error(`run: input shape [${t.shape}] does not fit the model's fixed [${shape}]`);
    }
    let values;
    if (info.dataType === 'float32') {
      if (t.dtype !== 'f32') throw new Error(`run: the model's input is float32, got ${t.dtype}`);
      values = t.data;
    } else if (info.dataType === 'int32') {
      values = toInt32(t, 'input');
    } else {
      throw new Error(`run: input type ${info.dataType} is not supported`);
    }
    return { info, values, batch, per: values.length / batch };
  },

  async infer(libs, x, names) {
    const outs = this.runner.getOutputs().filter((o) => names.includes(o.name));
    for (const o of outs)
      if (o.dataType !== 'float32') throw new Error(`output ${o.name} has type ${o.dataType}, not float32`);
    const acc = outs.map((o) => {
      const shape = o.shape.split(',').map(Number);
      const per = shape.reduce((a, b) => a * b, 1);
      if (x.batch > 1) {
        if (shape[0] !== 1) throw new Error(`output ${o.name} has shape [${shape}]: cannot batch a batch-1 model`);
        shape[0] = x.batch;
      }
      return { name: o.name, shape, per, values: new Float32Array(per * x.batch) };
    });
    const input = x.info.data();
    for (let b = 0; b < x.batch; ++b) {
      input.set(x.values.subarray(b * x.per, (b + 1) * x.per));
      if (!this.runner.infer()) throw new Error('TFLite inference failed (TFLiteWebModelRunner.infer returned false)');
      // Output buffers are views into the wasm heap: fetch them after every invocation.
      const now = this.runner.getOutputs();
      for (const a of acc) a.values.set(now.find((o) => o.name === a.name).data(), b * a.per);
    }
    const out = {};
    for (const a of acc) out[a.name] = { shape: a.shape, values: a.values };
    return out;
  },

  release() {},

  outputNames() {
    return this.runner.getOutputs().map((t) => t.name);
  },
};

function runnerOf(libs) {
  const r = { 'tfjs': tfjs, 'ort-web': ortWeb, 'tflite-web': tfliteWeb }[libs.runtime];
  if (!r) throw new Error(`runtime ${libs.runtime} has no inference ops (use the train_* ops)`);
  return r;
}

function loaded(r, op) {
  if (!(r.model || r.session)) throw new Error(`${op}: no model loaded (send load first)`);
}

export const ops = {
  async load(libs, req) {
    return runnerOf(libs).load(libs, req);
  },

  async run(libs, req) {
    const r = runnerOf(libs);
    loaded(r, 'run');
    const t = decodeTensor(req.input, 'run: input');
    const names = req.outputs ?? r.outputNames();
    if (!Array.isArray(names) || !names.every((n) => typeof n === 'string'))
      throw new Error('run: outputs must be an array of names');
    checkNames('run', names, r.outputNames());
    const x = await r.prepare(libs, t);
    try {
      const t0 = performance.now();
      const res = await r.infer(libs, x, names);
      const ms = performance.now() - t0;
      const outputs = {};
      for (const n of names) outputs[n] = encodeF32(res[n].shape, res[n].values);
      return { outputs, ms };
    } finally {
      r.release(libs, x);
    }
  },

  async time(libs, req) {
    const r = runnerOf(libs);
    loaded(r, 'time');
    const t = decodeTensor(req.input, 'time: input');
    if (t.shape.length < 1 || t.shape[0] < 1) throw new Error('time: input needs a leading sample dimension R >= 1');
    const warmup = req.warmup ?? 0;
    if (!Number.isInteger(warmup) || warmup < 0) throw new Error('time: warmup must be an integer >= 0');
    const names = r.outputNames();
    const one = async (s) => {
      const x = await r.prepare(libs, s);
      try {
        const t0 = performance.now();
        await r.infer(libs, x, names);
        return performance.now() - t0;
      } finally {
        r.release(libs, x);
      }
    };
    for (let i = 0; i < warmup; ++i) await one(sampleOf(t, 0));
    const ms = [];
    for (let i = 0; i < t.shape[0]; ++i) ms.push(await one(sampleOf(t, i)));
    return { ms };
  },
};
