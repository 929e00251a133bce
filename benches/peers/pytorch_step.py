#!/usr/bin/env python3
"""The f32 training step of benches/training.rs in PyTorch eager mode, one thread: the peer in BENCHMARKS.md.

    python3 benches/peers/pytorch_step.py        (needs torch; prints JSON: {"<net>/<batch>": seconds per step})

The same three nets (4-8-8-1 tanh, 16-32-32-16 ReLU, eight 64-wide sigmoid layers), the same step (zero the
gradients, forward, MSE, backward, SGD with lr 1e-3), float32, batches of 1 and 32 as one tensor. Each step is
timed as the median of repeated runs of many steps, like criterion's per-iteration estimate.
`python3 ci/figures.py --bench` runs this when torch imports (or with GRADSCOPE_TORCH_PYTHON pointing at a
Python that has it) and reports the time ratio beside gradscope's step of the same run.
"""

import json
import statistics
import sys
import time

import torch

torch.set_num_threads(1)
torch.manual_seed(9)


def net(name):
    if name == "4-8-8-1_tanh":
        return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8), torch.nn.Tanh(),
                                   torch.nn.Linear(8, 1)), 4, 1
    if name == "16-32-32-16_relu":
        return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32),
                                   torch.nn.ReLU(), torch.nn.Linear(32, 16)), 16, 16
    layers = []
    for _ in range(8):
        layers += [torch.nn.Linear(64, 64), torch.nn.Sigmoid()]
    return torch.nn.Sequential(*layers), 64, 64


def time_step(name, batch):
    model, i, o = net(name)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.rand(batch, i) - 0.5
    t = torch.rand(batch, o) - 0.5

    def step():
        opt.zero_grad(set_to_none=False)
        loss = torch.nn.functional.mse_loss(model(x), t)
        loss.backward()
        opt.step()

    for _ in range(200):
        step()
    # Enough steps per sample for ~50 ms, 15 samples.
    start = time.perf_counter()
    n = 0
    while time.perf_counter() - start < 0.05:
        step()
        n += 1
    samples = []
    for _ in range(15):
        start = time.perf_counter()
        for _ in range(n):
            step()
        samples.append((time.perf_counter() - start) / n)
    return statistics.median(samples)


def main():
    out = {}
    for name in ("4-8-8-1_tanh", "16-32-32-16_relu", "8x64_sigmoid"):
        for batch in (1, 32):
            out[f"{name}/{batch}"] = time_step(name, batch)
    json.dump({"torch": torch.__version__, "seconds_per_step": out}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
