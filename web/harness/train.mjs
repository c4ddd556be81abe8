// crossdl's trainer inside TensorFlow.js (docs/web-protocol.md, ops train_*): it loads the layers
// model crossdl writes (model.json + weights.bin, the initial weights) and takes optimiser steps
// on the minibatches crossdl sends, with PyTorch's conventions written out here rather than
// tf.train's optimisers (whose momentum, weight decay and Adam epsilon conventions differ):
//  - loss: mean over the batch of the softmax cross-entropy of the logits;
//  - sgd: g = grad + wd * p; buf = g on the first step, then buf = momentum * buf + g; p -= lr * buf
//    (no dampening, no Nesterov: torch.optim.SGD's defaults); momentum 0 keeps no buffer;
//  - adam: g = grad + wd * p; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
//    p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps) (torch.optim.Adam, no amsgrad).
// An LSTM's one TF.js bias (PyTorch's b_ih + b_hh) gets twice the gradient, as the sum of the two
// PyTorch parameters moves under SGD (Adam on an LSTM is refused: see train_load).
// BatchNorm is TF.js' own in training mode (model.apply(x, {training: true})): batch statistics
// with the biased variance for the output, as PyTorch, but the moving variance is updated with the
// biased batch variance where PyTorch uses the unbiased one (adapters/tfjs-train/README.md).
// The same module runs in Node and in the page (libs.fetchBytes reads the artefact files).

import { Unsupported } from './libs.mjs';
import { decodeTensor, encodeF32, toInt32 } from './tensor.mjs';

const TRAIN_OPTIMIZERS = ['sgd', 'adam'];

let state = null;

// ---- tensors on the wire (tensor.mjs) -----------------------------------------------------------

// A wire tensor as a TF.js tensor: f32 as float32; i64 and i32 as int32 (TF.js has no int64).
function toTf(tf, spec, what) {
  const t = decodeTensor(spec, what);
  if (t.dtype === 'f32') return tf.tensor(t.data, t.shape, 'float32');
  return tf.tensor(toInt32(t, what), t.shape, 'int32');
}

async function encode(t) {
  return encodeF32(t.shape, await t.data());
}

function asBytes(data, what) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new Error(`${what}: fetchBytes returned ${typeof data}, not bytes`);
}

function dirOf(file) {
  const at = file.lastIndexOf('/');
  return at < 0 ? '' : file.slice(0, at + 1);
}

// ---- checks on the request ----------------------------------------------------------------------

function number(req, key, fallback) {
  const v = req[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isFinite(v))
    throw new Error(`train_load: ${key} must be a finite number, got ${JSON.stringify(req[key])}`);
  return v;
}

function needState(op) {
  if (!state) throw new Error(`${op}: no model loaded (train_load first)`);
  return state;
}

function disposeState(tf) {
  if (!state) return;
  const s = state;
  state = null;
  for (const slot of s.slots) tf.dispose(Object.values(slot).filter((t) => t));
  s.model.dispose();
}

// ---- ops ----------------------------------------------------------------------------------------

async function train_load(libs, req) {
  const tf = libs.tf;
  if (typeof req.file !== 'string' || req.file === '')
    throw new Error('train_load: file (the model.json of the initial weights) must be a string');
  const optimizer = req.optimizer ?? 'sgd';
  if (!TRAIN_OPTIMIZERS.includes(optimizer))
    throw new Error(`train_load: optimizer '${optimizer}' is not one of ${TRAIN_OPTIMIZERS.join(', ')}`);
  const opt = {
    optimizer,
    momentum: number(req, 'momentum', 0),
    weightDecay: number(req, 'weight_decay', 0),
    beta1: number(req, 'beta1', 0.9),
    beta2: number(req, 'beta2', 0.999),
    eps: number(req, 'adam_eps', 1e-8),
  };
  disposeState(tf);

  const t0 = performance.now();
  const text = new TextDecoder().decode(asBytes(await libs.fetchBytes(req.file), req.file));
  let json;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new Error(`train_load: ${req.file} is not valid JSON: ${e.message}`);
  }
  if (!json.modelTopology || !Array.isArray(json.weightsManifest))
    throw new Error(`train_load: ${req.file} lacks modelTopology or weightsManifest`);
  const weightSpecs = [];
  const parts = [];
  for (const group of json.weightsManifest) {
    weightSpecs.push(...group.weights);
    for (const p of group.paths) parts.push(asBytes(await libs.fetchBytes(dirOf(req.file) + p), p));
  }
  const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    at += p.length;
  }
  const model = await tf.loadLayersModel(
      tf.io.fromMemory({ modelTopology: json.modelTopology, weightSpecs, weightData: all.buffer }));

  // Manifest names are the layers' original weight names ("conv1/kernel"); TF.js may suffix the
  // variables' own names when another model used them before.
  const byName = new Map(model.weights.map((w) => [w.originalName, w]));
  const manifest = weightSpecs.map((s) => s.name);
  for (const n of manifest)
    if (!byName.has(n)) throw new Error(`train_load: the loaded model has no weight '${n}'`);
  const trainableIds = new Set(model.trainableWeights.map((w) => w.id));
  const trainable = manifest.filter((n) => trainableIds.has(byName.get(n).id));
  const vars = trainable.map((n) => byName.get(n).read());
  // PyTorch's LSTM has two biases (b_ih, b_hh) that TF.js holds as their sum. Both get the same
  // gradient g, so under SGD the sum moves as a parameter whose gradient is 2g (weight decay and
  // momentum are linear in it and carry over exactly); Adam normalises each half on its own,
  // which the sum cannot reproduce, so it is refused.
  const lstmBiases = new Set(
      model.layers.filter((l) => l.getClassName() === 'LSTM').map((l) => `${l.name}/bias`));
  const doubled = trainable.map((n) => lstmBiases.has(n));
  if (optimizer === 'adam' && doubled.some((d) => d)) {
    model.dispose();
    throw new Unsupported('train_load: Adam on an LSTM: PyTorch normalises the updates of b_ih ' +
                          'and b_hh separately, TF.js holds only their sum');
  }
  const slots = trainable.map(() => ({}));
  if (optimizer === 'adam')
    for (let i = 0; i < vars.length; ++i) {
      slots[i].m = tf.keep(tf.zerosLike(vars[i]));
      slots[i].v = tf.keep(tf.zerosLike(vars[i]));
    }
  const outShape = model.outputs[0].shape;
  state = {
    model,
    opt,
    manifest,
    byName,
    trainable,
    vars,
    doubled,
    slots,
    steps: 0,
    numClasses: outShape[outShape.length - 1],
  };
  return { ms: performance.now() - t0, trainable, backend: tf.getBackend() };
}

async function train_step(libs, req) {
  const tf = libs.tf;
  const s = needState('train_step');
  const lr = req.lr;
  if (typeof lr !== 'number' || !(lr > 0)) throw new Error('train_step: lr must be a positive number');
  const x = toTf(tf, req.x, 'train_step: x');
  let labels;
  try {
    labels = toTf(tf, req.labels, 'train_step: labels');
  } catch (e) {
    x.dispose();
    throw e;
  }
  try {
    if (labels.rank !== 1 || labels.shape[0] !== x.shape[0])
      throw new Error(`train_step: labels [${labels.shape}] do not match the batch of x [${x.shape}]`);
    const values = await labels.data();
    for (const v of values)
      if (v < 0 || v >= s.numClasses)
        throw new Error(`train_step: label ${v} outside [0, ${s.numClasses})`);

    const t0 = performance.now();
    let value, grads;
    try {
      ({ value, grads } = tf.variableGrads(() => {
        const logits = s.model.apply(x, { training: true });
        const logp = tf.logSoftmax(logits);
        const picked = tf.sum(tf.mul(tf.oneHot(labels, s.numClasses), logp), -1);
        return tf.neg(tf.mean(picked));
      }, s.vars));
    } catch (e) {
      // A backend without a gradient kernel (wasm has no Conv2DBackpropFilter in 4.22) cannot
      // train this model: a skip with TF.js' own words, not a failure.
      const msg = String(e && e.message ? e.message : e);
      if (/not registered for backend/.test(msg)) throw new Unsupported(`train_step: ${msg}`);
      throw e;
    }
    const o = s.opt;
    s.steps += 1;
    tf.tidy(() => {
      const lrT = tf.scalar(lr);
      const wd = o.weightDecay !== 0 ? tf.scalar(o.weightDecay) : null;
      const bc1 = 1 - Math.pow(o.beta1, s.steps);
      const bc2 = 1 - Math.pow(o.beta2, s.steps);
      for (let i = 0; i < s.vars.length; ++i) {
        const p = s.vars[i];
        const slot = s.slots[i];
        let g = grads[p.name];
        if (!g) throw new Error(`train_step: no gradient for ${s.trainable[i]}`);
        if (s.doubled[i]) g = tf.mul(g, tf.scalar(2));
        if (wd) g = tf.add(g, tf.mul(p, wd));
        let update;
        if (o.optimizer === 'sgd') {
          if (o.momentum !== 0) {
            const buf = slot.buf ? tf.add(tf.mul(slot.buf, tf.scalar(o.momentum)), g) : tf.clone(g);
            if (slot.buf) slot.buf.dispose();
            slot.buf = tf.keep(buf);
            g = buf;
          }
          update = tf.mul(lrT, g);
        } else {
          const m = tf.add(tf.mul(slot.m, tf.scalar(o.beta1)), tf.mul(g, tf.scalar(1 - o.beta1)));
          const v = tf.add(tf.mul(slot.v, tf.scalar(o.beta2)),
                           tf.mul(tf.mul(g, g), tf.scalar(1 - o.beta2)));
          slot.m.dispose();
          slot.v.dispose();
          slot.m = tf.keep(m);
          slot.v = tf.keep(v);
          const denom = tf.add(tf.div(tf.sqrt(v), tf.scalar(Math.sqrt(bc2))), tf.scalar(o.eps));
          update = tf.mul(tf.scalar(lr / bc1), tf.div(m, denom));
        }
        p.assign(tf.sub(p, update));
      }
    });
    // Reading a value computed from the last updated weight waits for the whole step on
    // asynchronous backends (webgl), so that ms covers forward, backward and update.
    const loss = (await value.data())[0];
    const last = s.vars[s.vars.length - 1];
    const probe = tf.tidy(() => tf.sum(last));
    await probe.data();
    const ms = performance.now() - t0;
    probe.dispose();
    value.dispose();
    tf.dispose(Object.values(grads));
    return { loss, ms };
  } finally {
    x.dispose();
    labels.dispose();
  }
}

async function train_infer(libs, req) {
  const tf = libs.tf;
  const s = needState('train_infer');
  const x = toTf(tf, req.x, 'train_infer: x');
  try {
    const t0 = performance.now();
    const y = s.model.predict(x, { batchSize: x.shape[0] });
    const logits = await encode(Array.isArray(y) ? y[y.length - 1] : y);
    const ms = performance.now() - t0;
    tf.dispose(y);
    return { logits, ms };
  } finally {
    x.dispose();
  }
}

async function train_weights(libs) {
  const s = needState('train_weights');
  const t0 = performance.now();
  const weights = {};
  for (const n of s.manifest) weights[n] = await encode(s.byName.get(n).read());
  return { weights, steps: s.steps, ms: performance.now() - t0 };
}

export const ops = { train_load, train_step, train_infer, train_weights };
