#!/usr/bin/env python3
"""PyTorch references for gradscope's formulas: code we did not write, computed once and committed.

    python3 tests/data/make_golden.py        (needs `pip install torch numpy`; a CPU is enough)

writes tests/data/golden.json, which tests/golden.rs loads. Everything is float64 (the Rust tests compare the
f64 path within 1e-12 relative and the f32 path within 1e-5) except the f16/bf16 section, raw bits compared
exactly; inputs are seeded, and every parameter of every
layer is set explicitly here and stored in the file, so the Rust side builds the same network without
sharing an initializer with us. Layouts are PyTorch's: weights (out, in), gates in PyTorch's order (LSTM
i, f, g, o; GRU r, z, n).
"""

import json
import os

import numpy as np
import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)
gen = torch.Generator().manual_seed(20261129)


def rand(*shape, scale=1.0):
    return (torch.rand(*shape, generator=gen) * 2 - 1) * scale


def f32(v):
    """A parameter as gradscope stores it (activation parameters are f32)."""
    return float(np.float32(v))


def flat(t):
    return t.detach().reshape(-1).tolist()


# ------------------------------------------------------------------------------------------------ activations

ACTS = {
    "identity": lambda x: x,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": F.relu,
    "leaky_relu": lambda x: F.leaky_relu(x, f32(0.01)),
    "elu": lambda x: F.elu(x, f32(1.0)),
    "selu": F.selu,
    # PyTorch switches to the identity above `threshold`; gradscope never does, so the threshold is moved away.
    "softplus": lambda x: F.softplus(x, beta=f32(1.0), threshold=1e9),
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "softsign": F.softsign,
    "hardsigmoid": F.hardsigmoid,
    "hardtanh": F.hardtanh,
}


def activations():
    # Half-integer multiples of 1/16 in (−10, 10): every kink (0, ±1, ±3) is avoided, so f′ is unambiguous.
    x = (torch.arange(-160, 160, dtype=torch.float64) + 0.5) / 16
    out = {"x": x.tolist(), "f": {}, "df": {}}
    for name, f in ACTS.items():
        xv = x.clone().requires_grad_(True)
        y = f(xv)
        (dy,) = torch.autograd.grad(y.sum(), xv)
        out["f"][name] = y.tolist()
        out["df"][name] = dy.tolist()
    return out


# ------------------------------------------------------------------------------------------------------ losses

def losses():
    cases = []
    for k in range(6):
        scale = [0.5, 3.0, 30.0][k % 3]
        y = rand(5, scale=scale)
        t_reg = rand(5)
        t_bin = (torch.rand(5, generator=gen) > 0.5).double()
        t_prob = torch.softmax(rand(5, scale=2.0), 0) if k % 2 else F.one_hot(torch.tensor(k % 5), 5).double()
        case = {"y": y.tolist()}
        for name, t, fn in [
            ("mse", t_reg, lambda y, t: F.mse_loss(y, t)),
            ("bce_with_logits", t_bin, lambda y, t: F.binary_cross_entropy_with_logits(y, t)),
            # One sample of a batch: cross_entropy with probability targets over the class dimension.
            ("softmax_cross_entropy", t_prob, lambda y, t: F.cross_entropy(y[None], t[None])),
            ("softmax_mse", t_prob, lambda y, t: F.mse_loss(torch.softmax(y, 0), t)),
        ]:
            yv = y.clone().requires_grad_(True)
            loss = fn(yv, t)
            (g,) = torch.autograd.grad(loss, yv)
            case[name] = {"t": t.tolist(), "loss": loss.item(), "grad": g.tolist()}
        cases.append(case)
    return cases


# ------------------------------------------------------------------------------------------------------ layers

def linear(i, o, scale=0.7):
    lin = torch.nn.Linear(i, o)
    with torch.no_grad():
        lin.weight.copy_(rand(o, i, scale=scale))
        lin.bias.copy_(rand(o, scale=0.3))
    return lin


def grads_of(params, loss):
    gs = torch.autograd.grad(loss, params)
    return [flat(g) for g in gs]


def dense():
    """A 5-7-6-3 MLP (tanh, gelu, identity) on a batch of 4, MSE averaged over the batch."""
    layers = [(linear(5, 7), torch.tanh, "tanh"), (linear(7, 6), F.gelu, "gelu"), (linear(6, 3), lambda v: v, "identity")]
    x = rand(4, 5).requires_grad_(True)
    t = rand(4, 3)
    h = x
    for lin, act, _ in layers:
        h = act(lin(h))
    loss = ((h - t) ** 2).mean(dim=1).mean()
    params = [p for lin, _, _ in layers for p in (lin.weight, lin.bias)]
    gs = torch.autograd.grad(loss, params + [x])
    return {
        "acts": [a for _, _, a in layers],
        "weights": [flat(l.weight) for l, _, _ in layers],
        "biases": [flat(l.bias) for l, _, _ in layers],
        "x": x.tolist(), "t": t.tolist(), "loss": loss.item(), "y": h.tolist(),
        "grad_weights": [flat(g) for g in gs[0:-1:2]],
        "grad_biases": [flat(g) for g in gs[1:-1:2]],
        "grad_x": gs[-1].tolist(),
    }


def recurrent(kind, nonlinearity=None):
    """One sequence of T = 6 steps, I = 3 inputs, H = 4 hidden units; the loss is the mean over steps of the
    MSE of each hidden state against a target."""
    i, h, steps = 3, 4, 6
    if kind == "rnn":
        cell = torch.nn.RNN(i, h, nonlinearity=nonlinearity, batch_first=True)
    elif kind == "lstm":
        cell = torch.nn.LSTM(i, h, batch_first=True)
    else:
        cell = torch.nn.GRU(i, h, batch_first=True)
    with torch.no_grad():
        for p in cell.parameters():
            p.copy_(rand(*p.shape, scale=0.6))
    x = rand(1, steps, i).requires_grad_(True)
    t = rand(1, steps, h)
    hs, _ = cell(x)
    loss = ((hs - t) ** 2).mean(dim=2).mean()
    names = ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
    params = [getattr(cell, n) for n in names]
    gs = torch.autograd.grad(loss, params + [x])
    return {
        "params": {n: flat(p) for n, p in zip(names, params)},
        "grads": {n: flat(g) for n, g in zip(names, gs[:-1])},
        "x": x[0].tolist(), "t": t[0].tolist(), "hs": hs[0].tolist(), "loss": loss.item(),
        "grad_x": gs[-1][0].tolist(),
    }


def batchnorm():
    """BatchNorm1d(3) on batches of 5: one training step's outputs and gradients, the running statistics
    after four training batches, and evaluation-mode outputs with them."""
    n, b = 3, 5
    bn = torch.nn.BatchNorm1d(n)
    with torch.no_grad():
        bn.weight.copy_(1 + rand(n, scale=0.5))
        bn.bias.copy_(rand(n, scale=0.5))
    gamma, beta = flat(bn.weight), flat(bn.bias)
    batches = [rand(b, n, scale=2.0) + 0.7 for _ in range(4)]
    t = rand(b, n)
    x = batches[0].clone().requires_grad_(True)
    bn.train()
    y = bn(x)
    loss = ((y - t) ** 2).mean(dim=1).mean()
    gs = torch.autograd.grad(loss, [bn.weight, bn.bias, x])
    for xb in batches[1:]:
        with torch.no_grad():
            bn(xb)
    bn.eval()
    x_eval = rand(b, n, scale=2.0)
    with torch.no_grad():
        y_eval = bn(x_eval)
    return {
        "gamma": gamma, "beta": beta, "batches": [xb.tolist() for xb in batches], "t": t.tolist(),
        "y": y.tolist(), "loss": loss.item(),
        "grad_gamma": flat(gs[0]), "grad_beta": flat(gs[1]), "grad_x": gs[2].tolist(),
        "running_mean": flat(bn.running_mean), "running_var": flat(bn.running_var),
        "x_eval": x_eval.tolist(), "y_eval": y_eval.tolist(),
    }


def residual():
    """y = x + W₂ tanh(W₁ x + b₁) + b₂ with 4 features and 6 hidden units, then MSE, one sample."""
    l1, l2 = linear(4, 6), linear(6, 4)
    x = rand(4).requires_grad_(True)
    t = rand(4)
    y = x + l2(torch.tanh(l1(x)))
    loss = ((y - t) ** 2).mean()
    gs = torch.autograd.grad(loss, [l1.weight, l1.bias, l2.weight, l2.bias, x])
    return {
        "weights": [flat(l1.weight), flat(l2.weight)], "biases": [flat(l1.bias), flat(l2.bias)],
        "x": x.tolist(), "t": t.tolist(), "y": y.tolist(), "loss": loss.item(),
        "grad_weights": [flat(gs[0]), flat(gs[2])], "grad_biases": [flat(gs[1]), flat(gs[3])],
        "grad_x": flat(gs[4]),
    }


# ------------------------------------------------------------------------------------------------ convolution

def conv_layer(cls, c, f, k, stride=1, padding=0, scale=0.5):
    conv = cls(c, f, k, stride=stride, padding=padding)
    with torch.no_grad():
        conv.weight.copy_(rand(*conv.weight.shape, scale=scale))
        conv.bias.copy_(rand(f, scale=0.3))
    return conv


def conv_case(x, layers, head, out):
    """Run `layers` (each (module, activation or None, residual?)) and a linear head on one sample, MSE against a
    random target; every parameter, output and gradient in PyTorch's layouts."""
    x = x.requires_grad_(True)
    t = rand(out)
    h = x.unsqueeze(0)
    params = []
    for module, act, residual in layers:
        z = module(h)
        z = act(z) if act is not None else z
        h = h + z if residual else z
        params += list(module.parameters())
    y = head(h.flatten(1))[0]
    loss = ((y - t) ** 2).mean()
    gs = torch.autograd.grad(loss, params + list(head.parameters()) + [x])
    return {
        "params": [flat(p) for p in params + list(head.parameters())],
        "x": flat(x), "t": t.tolist(), "y": y.tolist(), "loss": loss.item(),
        "grads": [flat(g) for g in gs[:-1]], "grad_x": flat(gs[-1]),
    }


def conv():
    """Three small convolutional networks, one sample each, MSE:
    - cnn2d: x (2, 6, 6) -> Conv2d(2, 3, 3, padding 1) tanh -> residual Conv2d(3, 3, 3, padding 1) -> MaxPool2d(2)
      -> Conv2d(3, 4, 3, stride 2, padding 1) relu -> AvgPool2d(2) -> Linear(4, 2);
    - cnn1d: x (2, 9) -> Conv1d(2, 3, 3, stride 2, padding 1) sigmoid -> Linear(15, 2);
    - gap: x (1, 5, 5) -> Conv2d(1, 2, 3) tanh -> global average pooling -> Linear(2, 1);
    and BatchNorm2d (bn2d)."""
    nn = torch.nn
    cnn2d = conv_case(rand(2, 6, 6), [
        (conv_layer(nn.Conv2d, 2, 3, 3, padding=1), torch.tanh, False),
        (conv_layer(nn.Conv2d, 3, 3, 3, padding=1), None, True),
        (nn.MaxPool2d(2), None, False),
        (conv_layer(nn.Conv2d, 3, 4, 3, stride=2, padding=1), F.relu, False),
        (nn.AvgPool2d(2), None, False),
    ], linear(4, 2), 2)
    cnn1d = conv_case(rand(2, 9), [(conv_layer(nn.Conv1d, 2, 3, 3, stride=2, padding=1), torch.sigmoid, False)],
                      linear(15, 2), 2)
    gap = conv_case(rand(1, 5, 5), [
        (conv_layer(nn.Conv2d, 1, 2, 3), torch.tanh, False),
        (nn.AdaptiveAvgPool2d(1), None, False),
    ], linear(2, 1), 1)
    return {"cnn2d": cnn2d, "cnn1d": cnn1d, "gap": gap, "bn2d": batchnorm2d()}


def batchnorm2d():
    """BatchNorm2d(2) on batches of 3 samples of 2 x 3 x 3: one training step's outputs and gradients (MSE
    over every value), the running statistics after four training batches, and evaluation-mode outputs."""
    c, b = 2, 3
    bn = torch.nn.BatchNorm2d(c)
    with torch.no_grad():
        bn.weight.copy_(1 + rand(c, scale=0.5))
        bn.bias.copy_(rand(c, scale=0.5))
    gamma, beta = flat(bn.weight), flat(bn.bias)
    batches = [rand(b, c, 3, 3, scale=2.0) + 0.7 for _ in range(4)]
    t = rand(b, c, 3, 3)
    x = batches[0].clone().requires_grad_(True)
    bn.train()
    y = bn(x)
    loss = ((y - t) ** 2).mean()
    gs = torch.autograd.grad(loss, [bn.weight, bn.bias, x])
    for xb in batches[1:]:
        with torch.no_grad():
            bn(xb)
    bn.eval()
    x_eval = rand(b, c, 3, 3, scale=2.0)
    with torch.no_grad():
        y_eval = bn(x_eval)
    return {
        "gamma": gamma, "beta": beta, "batches": [flat(xb) for xb in batches], "t": flat(t),
        "y": flat(y), "loss": loss.item(),
        "grad_gamma": flat(gs[0]), "grad_beta": flat(gs[1]), "grad_x": flat(gs[2]),
        "running_mean": flat(bn.running_mean), "running_var": flat(bn.running_var),
        "x_eval": flat(x_eval), "y_eval": flat(y_eval),
    }


# ------------------------------------------------------------------------------------------------ f16 and bf16

def half_values():
    """float32 inputs (exact in float64, so one rounding on both sides) reaching every regime of both formats:
    ordinary magnitudes, f16's subnormals and its underflow to zero, exact ties between neighbours, the
    overflow threshold, and signed zeros."""
    g = torch.Generator().manual_seed(16)
    mags = torch.exp2(torch.rand(400, generator=g, dtype=torch.float64) * 60 - 40)
    signs = torch.where(torch.rand(400, generator=g) < 0.5, -1.0, 1.0)
    v = (mags * signs).to(torch.float32).tolist()
    # Ties: the midpoints of neighbouring f16 and bf16 values (f16: 11 significant bits; bf16: 8), both parities.
    for m in [1025, 1026, 2047, 1.0]:
        v += [float(m) + 0.5, -(float(m) + 0.5)]
    for e in [-24, -20, -14, 0, 10, 15]:
        for k in [1, 3, 5, 1023, 2047]:
            v.append(float(np.float32((k + 0.5) * 2.0 ** (e - 10))))
    for k in [129, 130, 255, 256]:
        v += [float(np.float32((k + 0.5) * 2.0 ** -7)), float(np.float32((k + 0.5) * 2.0 ** 119))]
    # f16's edges: the largest finite, the tie above it that rounds to infinity, subnormals and below.
    v += [65504.0, 65519.0, 65520.0, -65520.0, 2.0 ** -24, 2.0 ** -25, 1.5 * 2.0 ** -25, 2.0 ** -26, 0.0, -0.0]
    v += [float(np.float32(3.3895313892515355e38)), -1e-40, 1e-45]
    return [float(np.float32(x)) for x in v]


def half():
    """Rounding of float32 values to float16 and bfloat16, and +, −, × of pairs in each format: PyTorch's
    results as raw bits (its CPU kernels compute in float and round once)."""
    x = torch.tensor(half_values(), dtype=torch.float32)
    out = {"x": x.tolist()}
    g = torch.Generator().manual_seed(17)
    for name, dt in [("f16", torch.float16), ("bf16", torch.bfloat16)]:
        h = x.to(dt)
        bits = lambda t: (t.view(torch.int16).to(torch.int64) & 0xFFFF).tolist()
        a = h[torch.randperm(len(h), generator=g)]
        b = h[torch.randperm(len(h), generator=g)]
        out[name] = {
            "from_f32": bits(h),
            "a": bits(a),
            "b": bits(b),
            "add": bits(a + b),
            "sub": bits(a - b),
            "mul": bits(a * b),
        }
    return out


def main():
    golden = {
        "generator": f"tests/data/make_golden.py, torch {torch.__version__}",
        "activations": activations(),
        "losses": losses(),
        "dense": dense(),
        "rnn_tanh": recurrent("rnn", "tanh"),
        "rnn_relu": recurrent("rnn", "relu"),
        "lstm": recurrent("lstm"),
        "gru": recurrent("gru"),
        "batchnorm": batchnorm(),
        "residual": residual(),
        "half": half(),
        # Last, so that adding it left every section above unchanged (one seeded generator).
        "conv": conv(),
    }
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(golden, f, separators=(",", ":"))
        f.write("\n")
    os.replace(tmp, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
