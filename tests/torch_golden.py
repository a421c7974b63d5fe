#!/usr/bin/env python3
"""Writes the PyTorch golden files that tests/cell_torch_golden.rs checks
recur-core's cells against: nn.RNN (tanh, relu), nn.GRU and nn.LSTM.

For each cell: fixed seeded f32 weights, a dense input (T, B, I), h0 (and c0)
and a projection P (T, B, H); PyTorch computes, in float64 from those exact
f32 values, the outputs, the final states and every gradient (weights,
biases, input, h0, c0) of the loss L = sum(P * output). The same weights are
run a second time on token ids as one-hot inputs (recur's Input::Tokens).

Output (small, committed; CI never runs torch):
  tests/golden/cells.f32   every tensor, little-endian f32, concatenated
  tests/golden/cells.json  index: per case its dims, token ids and, per
                           tensor, offset (in elements) and shape

Run: .venv/bin/python tests/torch_golden.py   (from the repository root)
"""

import json
import os
import struct

import torch

T, B, I, H = 5, 3, 7, 6
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "golden")

CASES = [
    ("rnn_tanh", lambda: torch.nn.RNN(I, H, nonlinearity="tanh")),
    ("rnn_relu", lambda: torch.nn.RNN(I, H, nonlinearity="relu")),
    ("gru", lambda: torch.nn.GRU(I, H)),
    ("lstm", lambda: torch.nn.LSTM(I, H)),
]


def main():
    os.makedirs(OUT, exist_ok=True)
    blob = bytearray()
    index = {
        "format": "little-endian f32, offsets and shapes in elements",
        "file": "cells.f32",
        "torch": torch.__version__,
        "dims": {"steps": T, "batch": B, "input": I, "hidden": H},
        "cases": {},
    }

    def put(tensors, name, t):
        flat = t.detach().to(torch.float32).contiguous().reshape(-1).tolist()
        tensors[name] = {"offset": len(blob) // 4, "shape": list(t.shape)}
        blob.extend(struct.pack("<%df" % len(flat), *flat))

    for seed, (name, make) in enumerate(CASES):
        torch.manual_seed(1000 + seed)
        cell = make()  # f32 weights, PyTorch's default init
        lstm = isinstance(cell, torch.nn.LSTM)
        # Inputs drawn in f32; everything is then computed in f64 from those
        # exact values, so the golden values carry no f32 rounding of torch's.
        x = torch.randn(T, B, I)
        h0 = torch.randn(1, B, H) * 0.5
        c0 = torch.randn(1, B, H) * 0.5
        proj = torch.randn(T, B, H)
        ids = torch.randint(0, I, (T, B))
        tensors = {}
        for p_name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            put(tensors, p_name[:-3], getattr(cell, p_name))
        put(tensors, "input", x)
        put(tensors, "h0", h0[0])
        if lstm:
            put(tensors, "c0", c0[0])
        put(tensors, "proj", proj)

        cell = cell.double()
        for mode, inp in (("dense", x), ("tokens", torch.nn.functional.one_hot(ids, I))):
            cell.zero_grad()
            xin = inp.double().requires_grad_(True)
            h0d = h0.double().requires_grad_(True)
            c0d = c0.double().requires_grad_(True)
            if lstm:
                out, (hn, cn) = cell(xin, (h0d, c0d))
            else:
                out, hn = cell(xin, h0d)
            (out * proj.double()).sum().backward()
            put(tensors, mode + ".output", out)
            put(tensors, mode + ".h_n", hn[0])
            if lstm:
                put(tensors, mode + ".c_n", cn[0])
            for p_name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
                put(tensors, mode + ".grad_" + p_name[:-3], getattr(cell, p_name).grad)
            if mode == "dense":
                put(tensors, mode + ".grad_input", xin.grad)
            put(tensors, mode + ".grad_h0", h0d.grad[0])
            if lstm:
                put(tensors, mode + ".grad_c0", c0d.grad[0])
        index["cases"][name] = {
            "module": repr(make()),
            "token_ids": ids.reshape(-1).tolist(),
            "tensors": tensors,
        }

    with open(os.path.join(OUT, "cells.f32"), "wb") as f:
        f.write(blob)
    with open(os.path.join(OUT, "cells.json"), "w") as f:
        json.dump(index, f, indent=1, sort_keys=True)
        f.write("\n")
    print("wrote %d floats (%d bytes)" % (len(blob) // 4, len(blob)))


if __name__ == "__main__":
    main()
