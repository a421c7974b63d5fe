"""PyTorch baselines for benches/trainer_speed.sh.

Re-implements, faithfully, the code paths of the reference notebook
(seed 003, d2l's PyTorch chapter) that recur's presets reproduce, and times a
few epochs of each:

- scratch GRU / LSTM (`train_and_predict_rnn`, consecutive sampling): one-hot
  inputs, a Python loop over time steps, `nn.CrossEntropyLoss`, d2l's
  `grad_clipping` and `sgd(params, lr, 1)`;
- concise GRU / LSTM (`train_and_predict_rnn_pytorch`): `nn.GRU` / `nn.LSTM`
  + `nn.Linear` in d2l's `RNNModel`, Adam, state carried and detached.

Prints one line per model: `name best_tokens_per_s best_seconds_per_epoch
mean_tokens_per_s epochs ppl P` (best = fastest timed epoch, which is robust
to other processes' load on a shared machine; mean over all timed epochs).
Timing covers the training loop only (as the notebook's `time` does), after
one warm-up epoch.
"""

import argparse
import math
import time
import zipfile

import numpy as np
import torch
from torch import nn


def load(path, chars=10000):
    with zipfile.ZipFile(path) as zin:
        name = [n for n in zin.namelist() if n.endswith(".txt")][0]
        text = zin.read(name).decode("utf-8")
    text = text.replace("\n", " ").replace("\r", " ")[:chars]
    idx_to_char = sorted(set(text))
    char_to_idx = {c: i for i, c in enumerate(idx_to_char)}
    return [char_to_idx[c] for c in text], len(idx_to_char)


def data_iter_consecutive(corpus_indices, batch_size, num_steps):
    corpus_indices = torch.tensor(corpus_indices, dtype=torch.float32)
    data_len = len(corpus_indices)
    batch_len = data_len // batch_size
    indices = corpus_indices[0 : batch_size * batch_len].view(batch_size, batch_len)
    epoch_size = (batch_len - 1) // num_steps
    for i in range(epoch_size):
        i = i * num_steps
        yield indices[:, i : i + num_steps], indices[:, i + 1 : i + num_steps + 1]


def one_hot(x, n_class, dtype=torch.float32):
    x = x.long()
    res = torch.zeros(x.shape[0], n_class, dtype=dtype)
    res.scatter_(1, x.view(-1, 1), 1)
    return res


def to_onehot(X, n_class):
    return [one_hot(X[:, i], n_class) for i in range(X.shape[1])]


def grad_clipping(params, theta):
    norm = torch.tensor([0.0])
    for param in params:
        norm += (param.grad.data ** 2).sum()
    norm = norm.sqrt().item()
    if norm > theta:
        for param in params:
            param.grad.data *= theta / norm


def sgd(params, lr, batch_size):
    for param in params:
        param.data -= lr * param.grad / batch_size


# ---- scratch models (seed 003's get_params / gru / lstm) ----


def scratch_params(kind, vocab, hidden):
    def _one(shape):
        ts = torch.tensor(np.random.normal(0, 0.01, size=shape), dtype=torch.float32)
        return torch.nn.Parameter(ts, requires_grad=True)

    def _three():
        return (
            _one((vocab, hidden)),
            _one((hidden, hidden)),
            torch.nn.Parameter(torch.zeros(hidden, dtype=torch.float32), requires_grad=True),
        )

    gates = 3 if kind == "gru" else 4
    params = []
    for _ in range(gates):
        params.extend(_three())
    params.append(_one((hidden, vocab)))
    params.append(torch.nn.Parameter(torch.zeros(vocab, dtype=torch.float32), requires_grad=True))
    return nn.ParameterList(params)


def gru(inputs, state, params):
    W_xz, W_hz, b_z, W_xr, W_hr, b_r, W_xh, W_hh, b_h, W_hq, b_q = params
    (H,) = state
    outputs = []
    for X in inputs:
        Z = torch.sigmoid(torch.matmul(X, W_xz) + torch.matmul(H, W_hz) + b_z)
        R = torch.sigmoid(torch.matmul(X, W_xr) + torch.matmul(H, W_hr) + b_r)
        H_tilda = torch.tanh(torch.matmul(X, W_xh) + torch.matmul(R * H, W_hh) + b_h)
        H = Z * H + (1 - Z) * H_tilda
        Y = torch.matmul(H, W_hq) + b_q
        outputs.append(Y)
    return outputs, (H,)


def lstm(inputs, state, params):
    [W_xi, W_hi, b_i, W_xf, W_hf, b_f, W_xo, W_ho, b_o, W_xc, W_hc, b_c, W_hq, b_q] = params
    (H, C) = state
    outputs = []
    for X in inputs:
        I = torch.sigmoid(torch.matmul(X, W_xi) + torch.matmul(H, W_hi) + b_i)
        F = torch.sigmoid(torch.matmul(X, W_xf) + torch.matmul(H, W_hf) + b_f)
        O = torch.sigmoid(torch.matmul(X, W_xo) + torch.matmul(H, W_ho) + b_o)
        C_tilda = torch.tanh(torch.matmul(X, W_xc) + torch.matmul(H, W_hc) + b_c)
        C = F * C + I * C_tilda
        H = O * C.tanh()
        Y = torch.matmul(H, W_hq) + b_q
        outputs.append(Y)
    return outputs, (H, C)


def scratch_epochs(kind, corpus, vocab, epochs, hidden=256, batch=32, steps=35, lr=1e2, theta=1e-2):
    """`train_and_predict_rnn` with is_random_iter=False; yields (tokens, seconds) per epoch."""
    rnn = gru if kind == "gru" else lstm
    params = scratch_params(kind, vocab, hidden)
    loss = nn.CrossEntropyLoss()
    for _ in range(epochs):
        if kind == "gru":
            state = (torch.zeros((batch, hidden)),)
        else:
            state = (torch.zeros((batch, hidden)), torch.zeros((batch, hidden)))
        l_sum, n, start = 0.0, 0, time.time()
        for X, Y in data_iter_consecutive(corpus, batch, steps):
            for s in state:
                s.detach_()
            inputs = to_onehot(X, vocab)
            (outputs, state) = rnn(inputs, state, params)
            outputs = torch.cat(outputs, dim=0)
            y = torch.transpose(Y, 0, 1).contiguous().view(-1)
            l = loss(outputs, y.long())
            if params[0].grad is not None:
                for param in params:
                    param.grad.data.zero_()
            l.backward()
            grad_clipping(params, theta)
            sgd(params, lr, 1)
            l_sum += l.item() * y.shape[0]
            n += y.shape[0]
        yield n, time.time() - start, math.exp(l_sum / n)


# ---- concise models (seed 003's RNNModel / train_and_predict_rnn_pytorch) ----


class RNNModel(nn.Module):
    def __init__(self, rnn_layer, vocab_size):
        super().__init__()
        self.rnn = rnn_layer
        self.hidden_size = rnn_layer.hidden_size
        self.vocab_size = vocab_size
        self.dense = nn.Linear(self.hidden_size, vocab_size)
        self.state = None

    def forward(self, inputs, state):
        X = to_onehot(inputs, self.vocab_size)
        Y, self.state = self.rnn(torch.stack(X), state)
        output = self.dense(Y.view(-1, Y.shape[-1]))
        return output, self.state


def concise_epochs(kind, corpus, vocab, epochs, hidden=256, batch=32, steps=35, lr=1e-2, theta=1e-2):
    layer = nn.GRU(input_size=vocab, hidden_size=hidden) if kind == "gru" else nn.LSTM(input_size=vocab, hidden_size=hidden)
    model = RNNModel(layer, vocab)
    loss = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    state = None
    for _ in range(epochs):
        l_sum, n, start = 0.0, 0, time.time()
        for X, Y in data_iter_consecutive(corpus, batch, steps):
            if state is not None:
                if isinstance(state, tuple):
                    state = (state[0].detach(), state[1].detach())
                else:
                    state = state.detach()
            (output, state) = model(X, state)
            y = torch.transpose(Y, 0, 1).contiguous().view(-1)
            l = loss(output, y.long())
            optimizer.zero_grad()
            l.backward()
            # d2l's call: the generator is used up by the norm loop, so
            # nothing is scaled; its cost (the norm) is kept.
            grad_clipping_generator(model.parameters(), theta)
            optimizer.step()
            l_sum += l.item() * y.shape[0]
            n += y.shape[0]
        yield n, time.time() - start, math.exp(l_sum / n)


def grad_clipping_generator(params, theta):
    norm = torch.tensor([0.0])
    for param in params:
        norm += (param.grad.data ** 2).sum()
    norm = norm.sqrt().item()
    if norm > theta:
        for param in params:  # params is an exhausted generator here
            param.grad.data *= theta / norm


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default="../shared/data/jaychou_lyrics.txt.zip")
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs (after one warm-up)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default="scratch-gru,scratch-lstm,concise-gru,concise-lstm")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    np.random.seed(0)
    torch.manual_seed(0)
    corpus, vocab = load(args.corpus)
    for name in args.models.split(","):
        family, kind = name.split("-")
        run = scratch_epochs if family == "scratch" else concise_epochs
        results = list(run(kind, corpus, vocab, args.epochs + 1))[1:]
        tokens = sum(r[0] for r in results)
        seconds = sum(r[1] for r in results)
        best = min(results, key=lambda r: r[1])
        print(
            f"{name} {best[0] / best[1]:.0f} {best[1]:.4f} {tokens / seconds:.0f} {len(results)} ppl {results[-1][2]:.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
