"""Benchmark: each crossdl framework adapter against that library's own plain training loop.

LeNet-5 on Fashion-MNIST, batch 64, SGD lr 0.02 momentum 0.9, one thread, one epoch over the first
N training images, identical initial weights (crossdl's init_weights) and identical minibatch
order (epoch_order) on both sides. The crossdl side is train_run() -- what `crossdl train` does;
the native side is the loop a user of the library writes by hand (bench/native_<framework>.cpp),
on the same data prepared before its clock starts. The sides alternate, REPS times each, each run
a fresh process (bench/adapter_overhead_main.cpp). Reports the median training-loop time of each,
the ratio crossdl / native (target: <= 1.05), and the final train loss / test accuracy of both.

  python3 bench/train_adapters_vs_native.py [--framework torch|dlib|darknet|all] [--reps 3]
      [--train-size N] [--bin build/bench/crossdl_train_bench] [--json]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET = 1.05
# dlib's second baseline: the adapter's own split of work (dlib gradients + a hand-written update).
SIDES = {"torch": ["crossdl", "native"], "dlib": ["crossdl", "native", "native-manual"],
         "darknet": ["crossdl", "native"]}
DEFAULT_N = {"torch": 60000, "dlib": 10000, "darknet": 10000}


def one_run(binary, framework, side, n, seed):
    cmd = [binary, "--framework", framework, "--side", side, "--train-size", str(n),
           "--seed", str(seed)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["wall_s"] = wall
    return res


def bench(binary, framework, reps, n, seed):
    sides = SIDES[framework]
    runs = {s: [] for s in sides}
    for rep in range(reps):
        for side in sides:
            r = one_run(binary, framework, side, n, seed)
            runs[side].append(r)
            loss = "-" if r["train_loss"] is None else f"{r['train_loss']:.5f}"
            print(f"{framework} rep {rep + 1} {side:13s} train {r['seconds']:7.2f} s  "
                  f"wall {r['wall_s']:6.2f} s  loss {loss}  acc {r['test_accuracy']:.4f}",
                  file=sys.stderr)
    med = {s: statistics.median(r["seconds"] for r in v) for s, v in runs.items()}
    ratios = {s: med["crossdl"] / med[s] for s in sides if s != "crossdl"}
    hashes = {r["initial_weights_sha256"] for v in runs.values() for r in v}
    return {
        "framework": framework,
        "train_size": n,
        "reps": reps,
        "median_train_s": med,
        "ratio_crossdl_over": ratios,
        "target_ratio": TARGET,
        "meets_target": {s: r <= TARGET for s, r in ratios.items()},
        "same_initial_weights": len(hashes) == 1,
        "train_loss": {s: v[-1]["train_loss"] for s, v in runs.items()},
        "test_accuracy": {s: v[-1]["test_accuracy"] for s, v in runs.items()},
        "baselines": {s: v[-1]["baseline"] for s, v in runs.items()},
        "runs": runs,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--framework", default="all", choices=["all", *SIDES])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--train-size", type=int, default=0,
                    help="training images (default: 60000 for torch, 10000 for dlib/darknet)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "build", "bench", "crossdl_train_bench"))
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    frameworks = list(SIDES) if a.framework == "all" else [a.framework]
    results = [bench(a.bin, f, a.reps, a.train_size or DEFAULT_N[f], a.seed) for f in frameworks]
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), "unknown")
    if a.json:
        print(json.dumps({"cpu": cpu, "results": results}, indent=2))
        return
    for r in results:
        med = r["median_train_s"]
        print(f"{r['framework']}: {r['train_size']} images, {r['reps']} runs each, "
              f"same initial weights: {r['same_initial_weights']}")
        for side in med:
            loss = r["train_loss"][side]
            loss = "-" if loss is None else f"{loss:.5f}"
            print(f"  {side:13s} median {med[side]:7.2f} s  loss {loss}  "
                  f"acc {r['test_accuracy'][side]:.4f}  ({r['baselines'][side]})")
        for side, ratio in r["ratio_crossdl_over"].items():
            print(f"  crossdl / {side}: {ratio:.3f} (target <= {TARGET}: "
                  f"{'met' if ratio <= TARGET else 'MISSED'})")


if __name__ == "__main__":
    main()
