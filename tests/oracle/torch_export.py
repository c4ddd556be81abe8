"""Test oracle: small PyTorch models exported with torch.onnx.export, as a user would.

Builds the model with seeded PyTorch weights (BatchNorm given non-trivial running statistics),
exports it to ONNX, runs it in PyTorch on the given inputs and saves the outputs, so that a test
can check that crossdl reads the file and computes the same logits. Uses Debian's
/usr/bin/python3 with python3-torch (a test oracle, never a product dependency).

usage: torch_export.py cnn|lstm|gru OUT.onnx INPUT.npy OUT_LOGITS.npy
  cnn:  INPUT [N,1,28,28] float32; the batch axis is dynamic in the file.
  lstm, gru: INPUT [N,28,28] float32 read as 28 rows of 28 features; the file has a fixed batch N
        (a dynamic batch makes the exporter build the zero initial state from Shape/Expand nodes).
"""
import sys

import numpy as np
import torch
from torch import nn


class Cnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 8, 5)
        self.pool = nn.AvgPool2d(2)
        self.drop = nn.Dropout(0.3)
        self.fc1 = nn.Linear(8 * 5 * 5, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        x = self.pool(torch.tanh(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = self.drop(torch.sigmoid(self.fc1(x)))
        return self.fc2(x)


class Lstm(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(28, 16, batch_first=True)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        _, (h, _) = self.lstm(x)
        return self.fc(h.squeeze(0))


class Gru(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(28, 12, batch_first=True)
        self.fc = nn.Linear(12, 10)

    def forward(self, x):
        _, h = self.gru(x)
        return self.fc(h.squeeze(0))


def main(kind, onnx_path, input_path, logits_path):
    torch.manual_seed(7)
    torch.set_num_threads(1)
    net = {"cnn": Cnn, "lstm": Lstm, "gru": Gru}[kind]()
    if kind == "cnn":
        with torch.no_grad():
            net.bn1.running_mean.uniform_(-0.5, 0.5)
            net.bn1.running_var.uniform_(0.5, 2.0)
            net.bn1.weight.uniform_(0.5, 1.5)
            net.bn1.bias.uniform_(-0.2, 0.2)
    net.eval()
    x = torch.from_numpy(np.load(input_path)).float()
    with torch.no_grad():
        logits = net(x)
    dynamic = {"input": {0: "batch"}, "logits": {0: "batch"}} if kind == "cnn" else None
    torch.onnx.export(net, x, onnx_path, input_names=["input"], output_names=["logits"],
                      opset_version=13, dynamic_axes=dynamic)
    np.save(logits_path, logits.numpy())


if __name__ == "__main__":
    main(*sys.argv[1:5])
