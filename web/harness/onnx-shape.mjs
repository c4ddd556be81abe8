// Fixes the symbolic dimensions (dim_param) of an ONNX model's graph inputs to concrete sizes,
// editing the protobuf bytes directly (ModelProto.graph = 7, GraphProto.input = 11,
// ValueInfoProto.name = 1 / .type = 2, TypeProto.tensor_type = 1, Tensor.shape = 2,
// TensorShapeProto.dim = 1, Dimension.dim_value = 1 / .dim_param = 2). Everything else — nodes,
// initializers, outputs — is copied byte for byte.
//
// Used for ONNX Runtime Web's WebGL backend only: its onnxjs engine reads a symbolic input
// dimension as null and then refuses every input shape (see infer.mjs).

function varint(b, p) {
  let v = 0;
  let mul = 1;
  for (;;) {
    if (p >= b.length) throw new Error('ONNX: truncated varint');
    const byte = b[p++];
    v += (byte & 0x7f) * mul;
    if (!(byte & 0x80)) return [v, p];
    mul *= 128;
    if (mul > 2 ** 63) throw new Error('ONNX: varint too long');
  }
}

function encodeVarint(v) {
  const out = [];
  do {
    let byte = v % 128;
    v = Math.floor(v / 128);
    if (v > 0) byte |= 0x80;
    out.push(byte);
  } while (v > 0);
  return Uint8Array.from(out);
}

// The fields of one message: {num, wire, start, end, data: [from, to) for length-delimited}.
function fields(b) {
  const out = [];
  let p = 0;
  while (p < b.length) {
    const start = p;
    const [key, p1] = varint(b, p);
    p = p1;
    const num = Math.floor(key / 8);
    const wire = key % 8;
    let data = null;
    if (wire === 0) p = varint(b, p)[1];
    else if (wire === 1) p += 8;
    else if (wire === 5) p += 4;
    else if (wire === 2) {
      const [len, p2] = varint(b, p);
      data = [p2, p2 + len];
      p = p2 + len;
    } else {
      throw new Error(`ONNX: protobuf wire type ${wire} at byte ${start} is not supported`);
    }
    if (p > b.length) throw new Error('ONNX: truncated field');
    out.push({ num, wire, start, end: p, data });
  }
  return out;
}

function concat(parts) {
  const n = parts.reduce((a, x) => a + x.length, 0);
  const out = new Uint8Array(n);
  let at = 0;
  for (const x of parts) {
    out.set(x, at);
    at += x.length;
  }
  return out;
}

function lenField(num, payload) {
  return concat([encodeVarint(num * 8 + 2), encodeVarint(payload.length), payload]);
}

// Rewrites every length-delimited field `num` of message `b` with fn(payload, index).
function edit(b, num, fn) {
  const parts = [];
  let i = 0;
  for (const f of fields(b)) {
    if (f.num === num && f.wire === 2) parts.push(lenField(num, fn(b.subarray(f.data[0], f.data[1]), i++)));
    else parts.push(b.subarray(f.start, f.end));
  }
  return concat(parts);
}

function stringField(b, num) {
  for (const f of fields(b)) if (f.num === num && f.wire === 2) return new TextDecoder().decode(b.subarray(f.data[0], f.data[1]));
  return null;
}

// Returns {bytes, fixed}: the model with the symbolic dims of the named graph inputs set from
// shapes ({name: [d0, d1, ...]}), and how many dims were fixed.
export function fixInputDims(model, shapes) {
  let fixed = 0;
  const bytes = edit(model, 7, (graph) => edit(graph, 11, (vi) => {
    const name = stringField(vi, 1);
    const shape = shapes[name];
    if (!shape) return vi;
    return edit(vi, 2, (type) => edit(type, 1, (tensor) => edit(tensor, 2, (tshape) => {
      let rank = 0;
      const out = edit(tshape, 1, (dim, j) => {
        rank = j + 1;
        const fs = fields(dim);
        if (!fs.some((f) => f.num === 2 && f.wire === 2)) return dim;
        if (j >= shape.length) throw new Error(`ONNX: input ${name} has more dims than [${shape}]`);
        ++fixed;
        // dim_value = shape[j], keeping a denotation (field 3) if there is one.
        return concat([encodeVarint(8), encodeVarint(shape[j]),
          ...fs.filter((f) => f.num === 3).map((f) => dim.subarray(f.start, f.end))]);
      });
      if (rank !== shape.length) throw new Error(`ONNX: input ${name} has rank ${rank}, the input [${shape}]`);
      return out;
    })));
  }));
  return { bytes, fixed };
}

// True when a graph input has a symbolic dimension.
export function hasSymbolicInput(model) {
  let found = false;
  edit(model, 7, (graph) => edit(graph, 11, (vi) => edit(vi, 2, (type) => edit(type, 1, (tensor) =>
    edit(tensor, 2, (tshape) => edit(tshape, 1, (dim) => {
      if (fields(dim).some((f) => f.num === 2 && f.wire === 2)) found = true;
      return dim;
    }))))));
  return found;
}
