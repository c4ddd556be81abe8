// Tensors on the wire (docs/web-protocol.md): {"dtype":"f32"|"i64"|"i32","shape":[...],
// "data":"<base64 little-endian>"}. Shared by the page and Node: Buffer where Node has it,
// Uint8Array.fromBase64/toBase64 or atob/btoa in a browser.

const WIDTH = { f32: 4, i64: 8, i32: 4 };

function fromBase64(s) {
  if (typeof Buffer !== 'undefined') {
    const b = Buffer.from(s, 'base64');
    // Copy into an aligned buffer of its own: a Buffer may start at any offset of its pool.
    const out = new Uint8Array(b.byteLength);
    out.set(b);
    return out;
  }
  if (typeof Uint8Array.fromBase64 === 'function') return Uint8Array.fromBase64(s);
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; ++i) out[i] = bin.charCodeAt(i);
  return out;
}

function toBase64(bytes) {
  if (typeof Buffer !== 'undefined')
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
  if (typeof bytes.toBase64 === 'function') return bytes.toBase64();
  let bin = '';
  const CHUNK = 0x8000;
  for (let i = 0; i < bytes.length; i += CHUNK)
    bin += String.fromCharCode.apply(null, bytes.subarray(i, i + CHUNK));
  return btoa(bin);
}

// Decodes a wire tensor into {dtype, shape, data} with data a Float32Array, BigInt64Array or
// Int32Array of its own; `what` names the field in error messages.
export function decodeTensor(spec, what) {
  if (spec === null || typeof spec !== 'object') throw new Error(`${what}: not a tensor object`);
  const width = WIDTH[spec.dtype];
  if (!width) throw new Error(`${what}: dtype '${spec.dtype}' is not one of ${Object.keys(WIDTH).join(', ')}`);
  if (!Array.isArray(spec.shape) || !spec.shape.every((d) => Number.isInteger(d) && d >= 0))
    throw new Error(`${what}: shape must be an array of non-negative integers`);
  if (typeof spec.data !== 'string') throw new Error(`${what}: data must be a base64 string`);
  const bytes = fromBase64(spec.data);
  const count = spec.shape.reduce((a, b) => a * b, 1);
  if (bytes.byteLength !== count * width)
    throw new Error(`${what}: ${bytes.byteLength} data bytes for shape [${spec.shape}], expected ${count * width}`);
  const Array_ = spec.dtype === 'f32' ? Float32Array : spec.dtype === 'i64' ? BigInt64Array : Int32Array;
  return { dtype: spec.dtype, shape: spec.shape.slice(), data: new Array_(bytes.buffer, bytes.byteOffset, count) };
}

// TF.js and TFLite have no int64 tensors: token ids are narrowed to int32, refusing any that do
// not fit.
export function toInt32(t, what) {
  if (t.dtype === 'i32') return t.data;
  if (t.dtype !== 'i64') throw new Error(`${what}: dtype ${t.dtype} is not an integer type`);
  const out = new Int32Array(t.data.length);
  for (let i = 0; i < out.length; ++i) {
    const v = t.data[i];
    if (v < -2147483648n || v > 2147483647n) throw new Error(`${what}: id ${v} at index ${i} does not fit int32`);
    out[i] = Number(v);
  }
  return out;
}

// Encodes float values (any typed array or array of numbers) as an f32 wire tensor.
export function encodeF32(shape, values) {
  const f = values instanceof Float32Array ? values : Float32Array.from(values);
  const count = shape.reduce((a, b) => a * b, 1);
  if (f.length !== count) throw new Error(`output: ${f.length} values for shape [${shape}]`);
  return { dtype: 'f32', shape: shape.slice(), data: toBase64(new Uint8Array(f.buffer, f.byteOffset, f.byteLength)) };
}

// Sample r of a decoded tensor [R, ...] as a batch of one [1, ...] (a view, no copy).
export function sampleOf(t, r) {
  const per = t.shape.slice(1).reduce((a, b) => a * b, 1);
  return { dtype: t.dtype, shape: [1, ...t.shape.slice(1)], data: t.data.subarray(r * per, (r + 1) * per) };
}
