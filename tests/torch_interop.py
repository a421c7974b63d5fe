#!/usr/bin/env python3
"""PyTorch <-> recur interop through safetensors under d2l's RNNModel names.

    python tests/torch_interop.py write-golden
        Builds small PyTorch models (nn.RNN tanh, nn.GRU, nn.LSTM, and the GRU
        saved in float16), saves each with safetensors.torch.save_file exactly
        as a PyTorch user would (state_dict plus a `vocabulary` metadata
        entry), and writes its logits over a 50-character sequence beside it:
        tests/golden/interop_<name>.safetensors        (the model)
        tests/golden/interop_<name>_logits.safetensors (tokens, logits)
        tests/edge_torch_interop.rs checks that recur-core's logits match.

    python tests/torch_interop.py check-recur MODEL LOGITS
        The other direction: loads a model recur wrote (a trainer checkpoint
        or recur::interop::save_model output) into PyTorch modules and checks
        PyTorch's logits against the ones recur computed (LOGITS holds
        `tokens` and `logits`). Exit status 0 when they match.

Needs torch and safetensors (the project's .venv has both).
"""

import json
import os
import sys

import torch
from torch import nn
from safetensors import safe_open
from safetensors.torch import load_file, save_file

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
VOCAB = "abcdefghijklmnopqrstuvwxyz ,.\n"  # 30 characters
HIDDEN = 16
SEQ_LEN = 50
TOLERANCE = 1e-4


class RNNModel(nn.Module):
    """d2l's RNNModel with the trainer's names: `rnn` and `dense`."""

    def __init__(self, rnn, vocab_size):
        super().__init__()
        self.rnn = rnn
        self.vocab_size = vocab_size
        self.dense = nn.Linear(rnn.hidden_size, vocab_size)

    def forward(self, tokens):
        x = nn.functional.one_hot(tokens, self.vocab_size).float().unsqueeze(1)
        y, _ = self.rnn(x)  # (T, 1, H), state starts at zero
        return self.dense(y.squeeze(1))


class ScratchGRU(nn.Module):
    """d2l's from-scratch GRU (reset gate before the recurrent product),
    with PyTorch's parameter names and gate order r, z, n. PyTorch has no
    module for it; recur's `gru-reset-before` (the d2l-gru preset) is it."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.hidden_size = hidden_size
        g = 3 * hidden_size
        self.weight_ih_l0 = nn.Parameter(torch.empty(g, input_size))
        self.weight_hh_l0 = nn.Parameter(torch.empty(g, hidden_size))
        self.bias_ih_l0 = nn.Parameter(torch.empty(g))
        self.bias_hh_l0 = nn.Parameter(torch.empty(g))

    def forward(self, x):
        hd = self.hidden_size
        h = torch.zeros(x.shape[1], hd)
        w_hr, w_hz, w_hn = self.weight_hh_l0.split(hd)
        b_hr, b_hz, b_hn = self.bias_hh_l0.split(hd)
        out = []
        for xt in x:
            xr, xz, xn = (xt @ self.weight_ih_l0.T + self.bias_ih_l0).split(hd, dim=-1)
            r = torch.sigmoid(xr + h @ w_hr.T + b_hr)
            z = torch.sigmoid(xz + h @ w_hz.T + b_hz)
            n = torch.tanh(xn + (r * h) @ w_hn.T + b_hn)
            h = z * h + (1 - z) * n
            out.append(h)
        return torch.stack(out), h


def make_rnn(cell, vocab_size, hidden):
    if cell == "rnn-tanh":
        return nn.RNN(vocab_size, hidden, nonlinearity="tanh")
    if cell == "rnn-relu":
        return nn.RNN(vocab_size, hidden, nonlinearity="relu")
    if cell == "gru-reset-after":
        return nn.GRU(vocab_size, hidden)
    if cell == "gru-reset-before":
        return ScratchGRU(vocab_size, hidden)
    if cell == "lstm":
        return nn.LSTM(vocab_size, hidden)
    raise SystemExit(f"unknown cell {cell!r}")


def sequence(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, len(VOCAB), (SEQ_LEN,), generator=g)


def write_golden():
    os.makedirs(GOLDEN, exist_ok=True)
    # (file name, PyTorch cell, seed, stored dtype). No `cell` metadata: the
    # reader infers nn.RNN / nn.GRU / nn.LSTM from the gate count, as it
    # must for a file a PyTorch user saves.
    cases = [
        ("rnn", "rnn-tanh", 1, torch.float32),
        ("gru", "gru-reset-after", 2, torch.float32),
        ("lstm", "lstm", 3, torch.float32),
        ("gru_f16", "gru-reset-after", 4, torch.float16),
    ]
    for name, cell, seed, dtype in cases:
        torch.manual_seed(seed)
        model = RNNModel(make_rnn(cell, len(VOCAB), HIDDEN), len(VOCAB))
        with torch.no_grad():
            # Twice PyTorch's default init, so the gates saturate somewhere
            # and the comparison exercises the whole range.
            for p in model.parameters():
                p.mul_(2.0)
        state = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
        save_file(
            state,
            os.path.join(GOLDEN, f"interop_{name}.safetensors"),
            metadata={"vocabulary": json.dumps(VOCAB)},
        )
        # The logits of the weights as stored (f16 ones widened to f32).
        model.load_state_dict({k: v.float() for k, v in state.items()})
        tokens = sequence(100 + seed)
        with torch.no_grad():
            logits = model(tokens)
        save_file(
            {"tokens": tokens.to(torch.int32).contiguous(), "logits": logits.contiguous()},
            os.path.join(GOLDEN, f"interop_{name}_logits.safetensors"),
            metadata={"torch": torch.__version__, "cell": cell},
        )
        print(f"{name}: {cell}, {dtype}, logits {tuple(logits.shape)}")


def load_recur(model_path):
    """A recur-written file into a PyTorch RNNModel: the cell from the
    metadata (`cell`, or the trainer's `config`), the six tensors by name."""
    with safe_open(model_path, framework="pt") as f:
        meta = f.metadata() or {}
    if "cell" in meta:
        cell = meta["cell"]
    elif "config" in meta:
        cell = json.loads(meta["config"])["cell"]
    else:
        raise SystemExit(f"{model_path}: no `cell` or `config` metadata")
    vocabulary = json.loads(meta["vocabulary"])
    tensors = load_file(model_path)
    names = [
        "rnn.weight_ih_l0",
        "rnn.weight_hh_l0",
        "rnn.bias_ih_l0",
        "rnn.bias_hh_l0",
        "dense.weight",
        "dense.bias",
    ]
    hidden = tensors["rnn.weight_hh_l0"].shape[1]
    model = RNNModel(make_rnn(cell, len(vocabulary), hidden), len(vocabulary))
    # strict: every module parameter must be in the file under its name.
    model.load_state_dict({n: tensors[n].float() for n in names}, strict=True)
    return model, cell


def check_recur(model_path, logits_path):
    model, cell = load_recur(model_path)
    ref = load_file(logits_path)
    with torch.no_grad():
        logits = model(ref["tokens"].long())
    err = (logits - ref["logits"]).abs().max().item()
    ok = err <= TOLERANCE
    print(f"recur -> PyTorch ({cell}): max |logit difference| {err:.3e} over {tuple(logits.shape)}")
    return 0 if ok else 1


def main():
    args = sys.argv[1:]
    if args == ["write-golden"]:
        write_golden()
        return 0
    if len(args) == 3 and args[0] == "check-recur":
        return check_recur(args[1], args[2])
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
