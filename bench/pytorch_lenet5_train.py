"""The plain-PyTorch training loop crossdl is measured against (bench/train_lenet5_vs_pytorch.py).

What a user would write by hand: Fashion-MNIST from the IDX files into one float tensor, a seeded
permutation per epoch, LeNet-5, SGD(lr 0.02, momentum 0.9), inputs standardised (x/255 - 0.2860) / 0.3530 as crossdl does, cross-entropy, batch 64, 1 thread.
Prints one JSON line: the training-loop seconds, the test accuracy and the peak RSS.
"""
import gzip
import json
import resource
import sys
import time

import numpy as np
import torch
from torch import nn

ROOT = "/usr/share/datasets/fashion-mnist/"


def idx(path, header):
    with gzip.open(ROOT + path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=header)


class LeNet5(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(400, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def main(epochs=1, batch=64, seed=1):
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    xtr = torch.from_numpy(idx("train-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28).copy())
    ytr = torch.from_numpy(idx("train-labels-idx1-ubyte.gz", 8).astype(np.int64))
    xte = torch.from_numpy(idx("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28).copy())
    yte = torch.from_numpy(idx("t10k-labels-idx1-ubyte.gz", 8).astype(np.int64))
    xtr = (xtr.float() / 255.0 - 0.2860) / 0.3530
    xte = (xte.float() / 255.0 - 0.2860) / 0.3530
    net = LeNet5()
    opt = torch.optim.SGD(net.parameters(), lr=0.02, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(len(xtr))
        for b in range(0, len(xtr), batch):
            i = perm[b:b + batch]
            opt.zero_grad()
            loss = loss_fn(net(xtr[i]), ytr[i])
            loss.backward()
            opt.step()
    seconds = time.perf_counter() - t0
    net.eval()
    with torch.no_grad():
        acc = (net(xte).argmax(1) == yte).float().mean().item()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"seconds": seconds, "test_accuracy": acc, "peak_rss_mb": rss,
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main(*[int(a) for a in sys.argv[1:]])
