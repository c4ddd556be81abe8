"""Benchmark: crossdl's int8-static post-training quantization against PyTorch's own, side by side.

For each model (LeNet-5 on the full Fashion-MNIST, ResNet-20 on a 2,000-image subset, both trained
one epoch by `crossdl train` in LibTorch, or the folders given with --models):

  - crossdl quantizes it (int8-static, per-channel weights, min-max calibration on 512 training
    images: `crossdl quantize --save-calibration`) and `crossdl compare --precision
    fp32,int8-static,fp16` runs it in every runtime asked for; the accuracies of crossdl's own
    integer references come from the same run;
  - PyTorch (Debian's python3-torch 1.13, FX graph mode, QNNPACK engine) quantizes the same
    weights calibrated on the *same* 512 images: its default qconfig (per-tensor weights,
    histogram activations) and a per-channel min-max qconfig matching crossdl's;

and both are evaluated on the same test images. It reports the accuracy of each, the difference
crossdl - PyTorch in points (target: crossdl no worse than PyTorch by more than 0.3 points, and
int8 within one point of fp32), and each runtime's int8 and fp16 batch-1 latency as a ratio of its
fp32 latency, all from one run. Run with Debian's python3 (it has torch and onnx):

  /usr/bin/python3 bench/quant_vs_pytorch.py [--crossdl build/crossdl] [--runtimes ort,tflite]
      [--out DIR] [--models lenet5=DIR,resnet20=DIR] [--json]
"""
import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
FASHION = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530  # crossdl's Fashion-MNIST standardisation


def run(cmd):
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode not in (0, 1):  # 1: a finding (e.g. a runtime left crossdl's reference)
        sys.exit(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr[-2000:]}")
    return res.stdout


def fashion_test(n):
    with gzip.open(os.path.join(FASHION, "t10k-images-idx3-ubyte.gz")) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)[:n]
    with gzip.open(os.path.join(FASHION, "t10k-labels-idx1-ubyte.gz")) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)[:n].astype(np.int64)
    return ((x.astype(np.float32) / 255.0 - MEAN) / STD).astype(np.float32), y


class FromOnnx(nn.Module):
    """crossdl's fp32 ONNX file as plain PyTorch modules, node by node (FX-traceable: the node
    list is fixed, so tracing unrolls the loop)."""

    def __init__(self, path):
        super().__init__()
        g = onnx.load(path).graph
        init = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in g.initializer}
        self.steps = []
        self.mods = nn.ModuleDict()
        for i, n in enumerate(g.node):
            a = {x.name: onnx.helper.get_attribute_value(x) for x in n.attribute}
            key = f"m{i}"
            if n.op_type == "Conv":
                w = init[n.input[1]]
                m = nn.Conv2d(w.shape[1], w.shape[0], tuple(w.shape[2:]), stride=tuple(a["strides"]),
                              padding=tuple(a["pads"][:2]), bias=len(n.input) > 2)
                m.weight.data = w
                if len(n.input) > 2:
                    m.bias.data = init[n.input[2]]
                self.mods[key] = m
            elif n.op_type == "Gemm":
                w = init[n.input[1]]
                m = nn.Linear(w.shape[1], w.shape[0], bias=len(n.input) > 2)
                m.weight.data = w
                if len(n.input) > 2:
                    m.bias.data = init[n.input[2]]
                self.mods[key] = m
            elif n.op_type == "BatchNormalization":
                m = nn.BatchNorm2d(init[n.input[1]].shape[0], eps=a.get("epsilon", 1e-5))
                m.weight.data, m.bias.data = init[n.input[1]], init[n.input[2]]
                m.running_mean.data, m.running_var.data = init[n.input[3]], init[n.input[4]]
                self.mods[key] = m
            elif n.op_type == "MaxPool":
                self.mods[key] = nn.MaxPool2d(tuple(a["kernel_shape"]), tuple(a["strides"]),
                                              tuple(a.get("pads", [0, 0])[:2]))
            elif n.op_type == "Relu":
                self.mods[key] = nn.ReLU()
            elif n.op_type == "GlobalAveragePool":
                self.mods[key] = nn.AdaptiveAvgPool2d(1)
            elif n.op_type == "Flatten":
                self.mods[key] = nn.Flatten(1)
            elif n.op_type not in ("Add", "Identity"):
                raise SystemExit(f"{path}: node {n.name} ({n.op_type}) is not in this benchmark")
            self.steps.append((n.op_type, key, list(n.input), n.output[0]))
        self.out = g.output[0].name

    def forward(self, x):
        v = {"input": x}
        for op, key, ins, out in self.steps:
            if op == "Add":
                v[out] = v[ins[0]] + v[ins[1]]
            elif op == "Identity":
                v[out] = v[ins[0]]
            else:
                v[out] = self.mods[key](v[ins[0]])
        return v[self.out]


def accuracy(model, x, y):
    with torch.no_grad():
        pred = torch.cat([model(torch.from_numpy(x[i:i + 250])) for i in range(0, len(x), 250)])
    return float((pred.argmax(1).numpy() == y).mean())


def pytorch_ptq(onnx_path, calib, x, y):
    from torch.ao.quantization import QConfig, QConfigMapping, get_default_qconfig_mapping
    from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    torch.backends.quantized.engine = "qnnpack"
    out = {}
    per_channel = QConfig(
        activation=MinMaxObserver.with_args(dtype=torch.quint8),
        weight=PerChannelMinMaxObserver.with_args(dtype=torch.qint8,
                                                  qscheme=torch.per_channel_symmetric))
    for name, mapping in (("default (per-tensor, histogram)", get_default_qconfig_mapping("qnnpack")),
                          ("per-channel min-max", QConfigMapping().set_global(per_channel))):
        m = FromOnnx(onnx_path).eval()
        p = prepare_fx(m, mapping, example_inputs=(torch.from_numpy(calib[:1]),))
        with torch.no_grad():
            for i in range(0, len(calib), 64):
                p(torch.from_numpy(calib[i:i + 64]))
        out[name] = accuracy(convert_fx(p), x, y)
    out["fp32 (PyTorch)"] = accuracy(FromOnnx(onnx_path).eval(), x, y)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crossdl", default=os.path.join(HERE, "..", "build", "crossdl"))
    ap.add_argument("--runtimes", default="ort,tflite")
    ap.add_argument("--out", default="")
    ap.add_argument("--models", default="", help="lenet5=DIR,resnet20=DIR (else trained here)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    out = a.out or tempfile.mkdtemp(prefix="crossdl-quant-bench-")
    given = dict(kv.split("=", 1) for kv in a.models.split(",") if kv)
    plan = {"lenet5": ([], 10000), "resnet20": (["--train-limit", "2000"], 1000)}
    results = {}
    for model, (train_args, n_test) in plan.items():
        mdir = given.get(model) or os.path.join(out, model)
        if model not in given:
            run([a.crossdl, "train", "--model", model, "--framework", "torch", "--test-limit",
                 str(n_test), "--out", mdir, "--json", *train_args])
        qdir = os.path.join(out, model + "-int8")
        run([a.crossdl, "quantize", "--model", mdir, "--scheme", "int8-static", "--calibration",
             "512", "--save-calibration", "--out", qdir, "--json"])
        doc = json.loads(run([a.crossdl, "compare", "--model", mdir, "--runtimes", a.runtimes,
                              "--precision", "fp32,int8-static,fp16", "--limit", str(n_test),
                              "--latency-runs", "50", "--json"]))
        calib = np.load(os.path.join(qdir, "calibration_inputs.npy"))
        x, y = fashion_test(n_test)
        pt = pytorch_ptq(os.path.join(mdir, "model.onnx"), calib, x, y)
        rows = {(r["runtime"], r.get("precision", "fp32")): r for r in doc["runtimes"]}
        ref = doc["precision_references"]["int8-static"].get("accuracy", {})
        fp32 = rows[("torch", "fp32")]["accuracy"]
        res = {"test_images": n_test, "fp32_torch": fp32, "crossdl_integer_reference": ref,
               "pytorch": pt, "runtimes": {}}
        for rt in a.runtimes.split(","):
            f, q, h = rows.get((rt, "fp32")), rows.get((rt, "int8-static")), rows.get((rt, "fp16"))
            lat = lambda r: r["latency_ms"]["p50"] if r and r.get("status") == "ok" else None
            res["runtimes"][rt] = {
                "fp32_accuracy": f and f.get("accuracy"),
                "int8_accuracy": q and q.get("accuracy"),
                "int8_status": q and q.get("status"),
                "int8_within_one_step": q and q.get("within_one_step"),
                "fp16_accuracy": h and h.get("accuracy"),
                "p50_ms": {"fp32": lat(f), "int8": lat(q), "fp16": lat(h)},
                "latency_ratio_int8_fp32": lat(q) / lat(f) if lat(q) and lat(f) else None,
                "latency_ratio_fp16_fp32": lat(h) / lat(f) if lat(h) and lat(f) else None,
            }
        ours = ref.get("onnx_integer")
        res["crossdl_minus_pytorch_points"] = {
            k: 100 * (ours - v) for k, v in pt.items() if ours is not None and k != "fp32 (PyTorch)"}
        res["int8_minus_fp32_points"] = 100 * (ours - fp32) if ours is not None else None
        results[model] = res
        print(f"{model} ({n_test} test images): fp32 {fp32:.4f}; crossdl int8 reference "
              f"{ours:.4f} ({res['int8_minus_fp32_points']:+.2f} pp vs fp32); PyTorch FX QNNPACK "
              + ", ".join(f"{k} {v:.4f}" for k, v in pt.items()), file=sys.stderr)
        for rt, r in res["runtimes"].items():
            fmt = lambda v: "-" if v is None else f"{v:.2f}"
            print(f"  {rt}: int8 {r['int8_status']} acc {r['int8_accuracy']}, within one step "
                  f"{r['int8_within_one_step']}; p50 int8/fp32 "
                  f"{fmt(r['latency_ratio_int8_fp32'])}, fp16/fp32 "
                  f"{fmt(r['latency_ratio_fp16_fp32'])}", file=sys.stderr)
    summary = {"benchmark": "crossdl int8-static vs PyTorch FX PTQ (QNNPACK), same calibration "
                            "images; runtime int8/fp16 latency vs fp32", "threads": 1,
               "calibration": 512, "results": results,
               "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                            if l.startswith("model name")), "unknown"),
               "torch": torch.__version__}
    print(json.dumps(summary, indent=2) if a.json else json.dumps(
        {m: {"crossdl_minus_pytorch_points": r["crossdl_minus_pytorch_points"],
             "int8_minus_fp32_points": r["int8_minus_fp32_points"]} for m, r in results.items()},
        indent=2))


if __name__ == "__main__":
    main()
