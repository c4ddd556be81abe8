// The page-side dispatcher, shared with Node: handle(libs, req) runs one forwarded request (every
// op but hello, start and memory, which web/web-helper.mjs answers itself) and returns the reply
// fields. Inference ops live in infer.mjs; the train_* ops in train.mjs, imported on the first
// train_* request so that inference works whether or not the trainer is there.
import { ops as inferOps } from './infer.mjs';

export { Unsupported } from './libs.mjs';

let trainOps = null;

async function loadTrain() {
  if (!trainOps) {
    let mod;
    try {
      mod = await import('./train.mjs');
    } catch (e) {
      throw new Error(`the train_* ops are unavailable: cannot import train.mjs: ${e && e.message ? e.message : e}`);
    }
    if (!mod.ops || typeof mod.ops !== 'object') throw new Error('train.mjs exports no ops object');
    trainOps = mod.ops;
  }
  return trainOps;
}

export async function handle(libs, req) {
  if (req === null || typeof req !== 'object' || typeof req.op !== 'string')
    throw new Error('a request needs a string op');
  if (!libs) throw new Error(`${req.op}: no platform started (send start first)`);
  if (Object.hasOwn(inferOps, req.op)) return inferOps[req.op](libs, req);
  if (req.op.startsWith('train_')) {
    const t = await loadTrain();
    if (!Object.hasOwn(t, req.op)) throw new Error(`unknown op '${req.op}' (train.mjs has ${Object.keys(t).join(', ')})`);
    return t[req.op](libs, req);
  }
  throw new Error(`unknown op '${req.op}'`);
}
