#!/usr/bin/env python3
"""PyTorch side of benches/engine_train.rs: one training step (forward,
backward, global-norm clipping θ = 1, Adam) of d2l's concise models
(nn.GRU / nn.LSTM / nn.RNN + nn.Linear + CrossEntropy, one-hot input of
1,027, B 32, H 256, T 35), f32, on the GPU, timed over many steps two ways: the
loss read back every step (`.item()`, a host wait per step), and summed on
the device and read once per 8 steps (an epoch of d2l's preset).
    python3 benches/engine_train_torch.py
"""
import time

import torch
import torch.nn.functional as F


def main():
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    print(f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, {torch.cuda.get_device_name(0)}")
    T, B, H, V = 35, 32, 256, 1027
    for name, cls in (("rnn-tanh", torch.nn.RNN), ("gru", torch.nn.GRU), ("lstm", torch.nn.LSTM)):
        layer = cls(V, H).to(dev)
        dense = torch.nn.Linear(H, V).to(dev)
        params = list(layer.parameters()) + list(dense.parameters())
        opt = torch.optim.Adam(params, lr=1e-3)
        batches = [(torch.randint(0, V, (T, B), device=dev), torch.randint(0, V, (T, B), device=dev))
                   for _ in range(8)]

        def step(i):
            x, y = batches[i % len(batches)]
            out, _ = layer(F.one_hot(x, V).float())
            loss = F.cross_entropy(dense(out.reshape(-1, H)), y.reshape(-1))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            return loss.detach()

        for i in range(10):
            step(i).item()
        torch.cuda.synchronize()
        n = 200
        for mode in ("item every step", "item every 8 steps"):
            start = time.perf_counter()
            total = torch.zeros((), device=dev)
            for i in range(n):
                if mode == "item every step":
                    loss = step(i).item()
                else:
                    total = total + step(i)
                    if i % 8 == 7:
                        loss = total.item() / 8
                        total = torch.zeros((), device=dev)
            torch.cuda.synchronize()
            us = (time.perf_counter() - start) * 1e6 / n
            print(f"torch train step B={B} H={H} V={V} T={T} {name} f32 Adam+clip ({mode}): {us:.1f} us/step "
                  f"({us / T:.3f} us per time step), last loss {loss:.3f}", flush=True)


if __name__ == "__main__":
    main()
