#!/usr/bin/env python3
"""PyTorch models for `gradscope inspect`, and autograd's gradients for them: code we did not write.

    python3 tests/data/make_inspect.py      (needs `pip install torch safetensors numpy`; a CPU is enough)

writes into tests/data/inspect/, for each model NAME:
- NAME.safetensors  the state dict, saved exactly as a user would: safetensors.torch.save_file(model.state_dict(), path)
- NAME.csv          one batch: the inputs, then the targets (a class index for ce), floats written with repr so that
                    Rust parses the same f64
- NAME.torch.json   the torch version, the loss, the activations, and autograd's f64 gradients of the batch-mean
                    loss for each layer (weight row-major, then bias if the layer has one), computed on the stored weights in float64

crates/gradscope-lab/tests/inspect.rs compares gradscope's f64 column with these within 1e-9 relative; the tests
never need torch.
"""

import json
import os

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import save_file

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "inspect")
torch.manual_seed(20261130)

ACT = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "relu": nn.ReLU, "gelu": nn.GELU, "identity": None}


def sequential(sizes, acts, bias=True):
    mods = []
    for k, (i, o) in enumerate(zip(sizes, sizes[1:])):
        mods.append(nn.Linear(i, o, bias=bias[k] if isinstance(bias, list) else bias))
        if ACT[acts[k]] is not None:
            mods.append(ACT[acts[k]]())
    return nn.Sequential(*mods)


def write(name, model, acts, loss, x, target, dtype):
    model = model.to(dtype)
    save_file(model.state_dict(), os.path.join(HERE, name + ".safetensors"))
    # The reference: the stored weights, exactly, in float64.
    ref = model.to(torch.float64)
    for p in ref.parameters():
        p.grad = None
    y = ref(x)
    if loss == "ce":
        value = nn.CrossEntropyLoss()(y, target)
    elif loss == "bce":
        value = nn.BCEWithLogitsLoss()(y, target)
    else:
        value = nn.MSELoss()(y, target)
    value.backward()
    layers = []
    for m in ref.modules():
        if isinstance(m, (nn.Linear, nn.RNNBase)):
            # Parameters in registration order: weight (row-major), bias; weight_ih_l0, weight_hh_l0, bias_ih_l0,
            # bias_hh_l0.
            layers.append([v for p in m.parameters() for v in p.grad.reshape(-1).tolist()])
    with open(os.path.join(HERE, name + ".csv"), "w") as f:
        f.write(",".join([f"x{k}" for k in range(x[0].numel())] + (["class"] if loss == "ce" else
                         [f"t{k}" for k in range(target.shape[1])])) + "\n")
        for xi, ti in zip(x.reshape(x.shape[0], -1).tolist(), target.tolist()):
            t = [str(ti)] if loss == "ce" else [repr(v) for v in ti]
            f.write(",".join([repr(v) for v in xi] + t) + "\n")
    with open(os.path.join(HERE, name + ".torch.json"), "w") as f:
        json.dump({"torch": torch.__version__, "loss": loss, "activations": acts, "dtype": str(dtype),
                   "loss_value": value.item(), "grads": layers}, f, indent=1)
        f.write("\n")


os.makedirs(HERE, exist_ok=True)

# A classifier stored in float32 (the common case): 5 -> 12 -> 7 -> 3, tanh, sigmoid, logits; 16 samples.
acts = ["tanh", "sigmoid", "identity"]
x = torch.randn(16, 5, dtype=torch.float64) * 0.5
write("mlp", sequential([5, 12, 7, 3], acts), acts, "ce", x, torch.randint(0, 3, (16,)), torch.float32)

# A regressor stored in float64, one layer without bias, widths that pad to 32: 3 -> 20 -> 20 -> 2.
acts = ["relu", "gelu", "identity"]
x = torch.rand(10, 3, dtype=torch.float64) * 2 - 1
t = torch.rand(10, 2, dtype=torch.float64) * 2 - 1
write("regressor", sequential([3, 20, 20, 2], acts, bias=[True, False, True]), acts, "mse", x, t, torch.float64)

# Binary logits stored in bfloat16: 4 -> 6 -> 1.
acts = ["tanh", "identity"]
x = torch.randn(8, 4, dtype=torch.float64)
t = (torch.rand(8, 1, dtype=torch.float64) > 0.5).to(torch.float64)
write("binary", sequential([4, 6, 1], acts), acts, "bce", x, t, torch.bfloat16)


class Sequence(nn.Module):
    """A recurrent layer (batch first) whose last state feeds an optional linear head."""

    def __init__(self, rnn, head=None):
        super().__init__()
        self.rnn = rnn
        self.head = head

    def forward(self, x):
        out, _ = self.rnn(x)
        last = out[:, -1]
        return self.head(last) if self.head is not None else last


# An LSTM regressor stored in float32: 3 inputs per step, 10 hidden, 20 steps, a linear head to 2; 12 samples.
x = torch.randn(12, 20, 3, dtype=torch.float64)
t = torch.rand(12, 2, dtype=torch.float64) * 2 - 1
write("lstm", Sequence(nn.LSTM(3, 10, batch_first=True), nn.Linear(10, 2)), ["tanh", "identity"], "mse", x, t,
      torch.float32)

# A GRU classifier stored in float64: 2 inputs per step, 6 hidden, 10 steps, a head to 3 logits; 8 samples.
x = torch.randn(8, 10, 2, dtype=torch.float64)
write("gru", Sequence(nn.GRU(2, 6, batch_first=True), nn.Linear(6, 3)), ["tanh", "identity"], "ce", x,
      torch.randint(0, 3, (8,)), torch.float64)

# A ReLU Elman RNN without a head, stored in float32: 4 inputs, 8 hidden, 10 steps, MSE on the last state.
x = torch.rand(6, 10, 4, dtype=torch.float64) * 2 - 1
t = torch.rand(6, 8, dtype=torch.float64)
write("rnn", Sequence(nn.RNN(4, 8, nonlinearity="relu", batch_first=True)), ["relu"], "mse", x, t, torch.float32)
