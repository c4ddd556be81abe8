"""Benchmark: crossdl (LibTorch adapter) against a plain PyTorch Python loop, side by side.

LeNet-5, one epoch of the full Fashion-MNIST (60,000 images), batch 64, SGD 0.02/0.9, one thread.
The two alternate, REPS times each, in one run on the same machine; each run is a fresh process.
Reports the median training-loop time of each, the ratio crossdl / PyTorch (target: <= 1.0) and
the whole-process wall times. Run with Debian's python3 (it has torch):

  /usr/bin/python3 bench/train_lenet5_vs_pytorch.py [--reps 3] [--crossdl build/crossdl]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def timed(cmd):
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out), time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--crossdl", default=os.path.join(HERE, "..", "build", "crossdl"))
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    crossdl_cmd = [a.crossdl, "train", "--model", "lenet5", "--dataset", "fashion-mnist",
                   "--framework", "torch", "--epochs", "1", "--batch-size", "64", "--lr", "0.02",
                   "--momentum", "0.9", "--threads", "1", "--seed", "1", "--json"]
    torch_cmd = ["/usr/bin/python3", os.path.join(HERE, "pytorch_lenet5_train.py"), "1", "64", "1"]
    runs = {"crossdl": [], "pytorch": []}
    for rep in range(a.reps):
        for name, cmd in (("crossdl", crossdl_cmd), ("pytorch", torch_cmd)):
            res, wall = timed(cmd)
            runs[name].append({"seconds": res["seconds"], "wall_s": wall,
                               "test_accuracy": res["test_accuracy"],
                               "peak_rss_mb": res["peak_rss_mb"]})
            print(f"rep {rep + 1} {name:8s} train {res['seconds']:.2f} s  wall {wall:.2f} s  "
                  f"acc {res['test_accuracy']:.4f}  rss {res['peak_rss_mb']:.0f} MB",
                  file=sys.stderr)
    med = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
    wall = {k: statistics.median(r["wall_s"] for r in v) for k, v in runs.items()}
    summary = {
        "benchmark": "lenet5 1 epoch fashion-mnist batch 64 sgd, 1 thread",
        "reps": a.reps,
        "median_train_s": med,
        "median_wall_s": wall,
        "ratio_train": med["crossdl"] / med["pytorch"],
        "ratio_wall": wall["crossdl"] / wall["pytorch"],
        "target_ratio": 1.0,
        "runs": runs,
        "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                     if l.startswith("model name")), "unknown"),
    }
    if a.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"crossdl / PyTorch training time: {summary['ratio_train']:.3f} "
              f"(median {med['crossdl']:.2f} s vs {med['pytorch']:.2f} s over {a.reps} runs); "
              f"whole process {summary['ratio_wall']:.3f}; target <= 1.0")


if __name__ == "__main__":
    main()
