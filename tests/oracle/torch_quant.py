"""Test oracle for crossdl's quantization core, in plain PyTorch (Python).

usage:
  torch_quant.py forward DIR   DIR/model.json (layers as crossdl resolved them), DIR/w/<name>.npy,
                               DIR/x.npy -> DIR/out.npy: the fp32 forward pass in evaluation mode
                               through torch.nn.functional and torch.nn.LSTM/GRU.
  torch_quant.py qops DIR      DIR/cases.json: single quantized Conv2d / Linear layers with
                               crossdl's scales, zero points, int8 weights and int32 biases ->
                               DIR/<case>.<engine>.npy: PyTorch's own quantized kernels'
                               (torch.ops.quantized.conv2d / linear, with or without the fused
                               ReLU) int8 outputs, for every engine in ENGINES that this PyTorch has.

Int8 tensors travel as uint8 .npy (q + 128), which is also the quint8 representation PyTorch's
QNNPACK wants for activations: q_u8 = q_i8 + 128 and zp_u8 = zp_i8 + 128 is the same arithmetic.
Uses Debian's /usr/bin/python3 with python3-torch; a test oracle, never a product dependency.
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

ENGINES = ["qnnpack", "onednn"]


def load_weights(d):
    return lambda name: torch.from_numpy(np.load(os.path.join(d, "w", name + ".npy")))


def forward(d):
    torch.set_num_threads(1)
    spec = json.load(open(os.path.join(d, "model.json")))
    w = load_weights(d)
    x = torch.from_numpy(np.load(os.path.join(d, "x.npy")))
    values = {"input": x}
    out = None
    with torch.no_grad():
        for l in spec["layers"]:
            n, op, ins = l["name"], l["op"], [values[i] for i in l["inputs"]]
            a = ins[0]
            if op == "Conv2d":
                y = F.conv2d(a, w(n + ".weight"), w(n + ".bias") if l["bias"] else None,
                             stride=l["stride"], padding=l["pad"])
            elif op == "Dense":
                y = F.linear(a, w(n + ".weight"), w(n + ".bias") if l["bias"] else None)
            elif op == "ReLU":
                y = torch.relu(a)
            elif op == "Tanh":
                y = torch.tanh(a)
            elif op == "Sigmoid":
                y = torch.sigmoid(a)
            elif op == "MaxPool2d":
                y = F.max_pool2d(a, l["kernel"], l["stride"], l["pad"])
            elif op == "AvgPool2d":
                y = F.avg_pool2d(a, l["kernel"], l["stride"], l["pad"], count_include_pad=False)
            elif op == "GlobalAvgPool":
                y = F.adaptive_avg_pool2d(a, 1)
            elif op == "BatchNorm2d":
                y = F.batch_norm(a, w(n + ".running_mean"), w(n + ".running_var"),
                                 w(n + ".weight"), w(n + ".bias"), training=False, eps=l["eps"])
            elif op == "Add":
                y = a + ins[1]
            elif op == "Flatten":
                y = torch.flatten(a, 1)
            elif op == "Softmax":
                y = torch.softmax(a, -1)
            elif op == "Embedding":
                y = F.embedding(a, w(n + ".weight"))
            elif op == "ImageToSequence":
                nb, c, h, wd = a.shape
                y = a.permute(0, 2, 1, 3).reshape(nb, h, c * wd)
            elif op in ("LSTM", "GRU"):
                cls = torch.nn.LSTM if op == "LSTM" else torch.nn.GRU
                rnn = cls(a.shape[-1], l["out"], batch_first=True)
                for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(rnn, p + "_l0").data.copy_(w(n + "." + p))
                _, h = rnn(a)
                y = (h[0] if op == "LSTM" else h)[-1]
            else:
                raise SystemExit("torch_quant.py: no op " + op)
            values[n] = y
            out = y
    np.save(os.path.join(d, "out.npy"), out.numpy().astype(np.float32))


def qops(d):
    torch.set_num_threads(1)
    cases = json.load(open(os.path.join(d, "cases.json")))
    engines = [e for e in ENGINES if e in torch.backends.quantized.supported_engines]
    for c in cases:
        name = c["name"]
        xq = np.load(os.path.join(d, name + ".x.npy"))  # uint8: q + 128
        wq = np.load(os.path.join(d, name + ".w.npy")).astype(np.int8)  # int64 holding int8
        bq = np.load(os.path.join(d, name + ".b.npy"))  # int64 holding int32
        w_scales = np.array(c["w_scales"], dtype=np.float64)
        per_channel = len(w_scales) > 1
        x = torch._make_per_tensor_quantized_tensor(
            torch.from_numpy(xq), c["in_scale"], c["in_zp"] + 128)
        wt = torch.from_numpy(wq)
        if per_channel:
            w = torch._make_per_channel_quantized_tensor(
                wt, torch.from_numpy(w_scales), torch.zeros(len(w_scales), dtype=torch.int64), 0)
        else:
            w = torch._make_per_tensor_quantized_tensor(wt, float(w_scales[0]), 0)
        # PyTorch takes a float bias and quantizes it with scale in_scale * w_scale itself.
        s = np.float64(c["in_scale"]) * (w_scales if per_channel else w_scales[0])
        bias = torch.from_numpy((bq.astype(np.float64) * s).astype(np.float32))
        for engine in engines:
            torch.backends.quantized.engine = engine
            if c["kind"] == "conv":
                packed = torch.ops.quantized.conv2d_prepack(
                    w, bias, [c["stride"], c["stride"]], [c["pad"], c["pad"]], [1, 1], 1)
                op = torch.ops.quantized.conv2d_relu if c["relu"] else torch.ops.quantized.conv2d
            else:
                packed = torch.ops.quantized.linear_prepack(w, bias)
                op = torch.ops.quantized.linear_relu if c["relu"] else torch.ops.quantized.linear
            y = op(x, packed, c["out_scale"], c["out_zp"] + 128)
            np.save(os.path.join(d, name + "." + engine + ".npy"),
                    y.int_repr().numpy().astype(np.uint8))
    json.dump({"engines": engines, "torch": torch.__version__},
              open(os.path.join(d, "engines.json"), "w"))


if __name__ == "__main__":
    {"forward": forward, "qops": qops}[sys.argv[1]](sys.argv[2])
