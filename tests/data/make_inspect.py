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
    for m in ref:
        if isinstance(m, nn.Linear):
            g = m.weight.grad.reshape(-1).tolist()
            g += m.bias.grad.tolist() if m.bias is not None else []
            layers.append(g)
    with open(os.path.join(HERE, name + ".csv"), "w") as f:
        f.write(",".join([f"x{k}" for k in range(x.shape[1])] + (["class"] if loss == "ce" else
                         [f"t{k}" for k in range(target.shape[1])])) + "\n")
        for xi, ti in zip(x.tolist(), target.tolist()):
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
