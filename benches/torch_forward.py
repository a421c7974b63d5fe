#!/usr/bin/env python3
"""PyTorch (cuDNN) side of the engine benchmarks, on the same shapes:

- d2l's shape: nn.RNN / nn.GRU / nn.LSTM, B 32, H 256, one-hot input of
  1,027 (as d2l's RNNModel feeds them), T 35, f32 and f16 — the layer alone,
  and with d2l's output layer and cross-entropy loss.
- nn.LSTM H 768, input 768, B 16, T 1,024, f16.

Timed with CUDA events over many forwards under torch.no_grad(), reported
as µs per time step. Run on the GPU machine next to the engine's benches:
    python3 benches/torch_forward.py
"""
import torch
import torch.nn.functional as F


def time_us(fn, runs):
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(runs):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1000.0 / runs


def main():
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    print(f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, {torch.cuda.get_device_name(0)}")
    T, B, H, V = 35, 32, 256, 1027
    for dtype in (torch.float32, torch.float16):
        for name, cls in (("rnn-tanh", torch.nn.RNN), ("gru", torch.nn.GRU), ("lstm", torch.nn.LSTM)):
            layer = cls(V, H).to(dev, dtype)
            dense = torch.nn.Linear(H, V).to(dev, dtype)
            tokens = torch.randint(0, V, (T, B), device=dev)
            x = F.one_hot(tokens, V).to(dtype)
            with torch.no_grad():
                us = time_us(lambda: layer(x), 200)
                def full():
                    y, _ = layer(x)
                    logits = dense(y.reshape(-1, H))
                    return F.cross_entropy(logits.float(), tokens.reshape(-1))
                us_full = time_us(full, 200)
            print(f"torch d2l B={B} H={H} V={V} T={T} {name:<8} {str(dtype)[6:]}: layer {us / T:.3f} us/step, "
                  f"layer+output+loss {us_full / T:.3f} us/step")
    T, B, H, I = 1024, 16, 768, 768
    lstm = torch.nn.LSTM(I, H).to(dev, torch.float16)
    x = torch.randn(T, B, I, device=dev, dtype=torch.float16)
    with torch.no_grad():
        us = time_us(lambda: lstm(x), 20)
    print(f"torch lstm H={H} I={I} B={B} T={T} f16: {us / T:.3f} us/step")


if __name__ == "__main__":
    main()
