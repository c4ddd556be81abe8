"""Test oracle: LeNet-5 in plain PyTorch (Python), built independently of crossdl.

Reads the weights from the ONNX file crossdl wrote (initializers named like crossdl's weight set),
runs the forward pass and the input gradient of the mean cross-entropy on the given inputs, and
writes them as .npy. Uses Debian's /usr/bin/python3 with python3-torch and python3-onnx; it is a
test oracle, never a product dependency.

usage: torch_lenet5.py MODEL.onnx INPUT.npy LABELS.npy OUT_LOGITS.npy OUT_GRAD.npy
"""
import sys

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn


class LeNet5(nn.Module):
    def __init__(self, pad):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=pad)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


def main(model_path, input_path, labels_path, logits_path, grad_path):
    torch.set_num_threads(1)
    x = torch.from_numpy(np.load(input_path))
    y = torch.from_numpy(np.load(labels_path))
    net = LeNet5(pad=2 if x.shape[-1] == 28 else 0)
    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(model_path).graph.initializer}
    state = net.state_dict()
    for name in state:
        state[name] = torch.from_numpy(weights[name].copy())
    net.load_state_dict(state)
    net.eval()
    x.requires_grad_(True)
    logits = net(x)
    loss = nn.functional.cross_entropy(logits, y)
    loss.backward()
    np.save(logits_path, logits.detach().numpy())
    np.save(grad_path, x.grad.numpy())


if __name__ == "__main__":
    main(*sys.argv[1:6])
