#!/usr/bin/env python3
"""PyTorch eager, one inference step of d2l's GRU language model at batch 1
(vocabulary 1,027, hidden 256): d2l's RNNModel.forward on one token,
one_hot -> nn.GRU -> nn.Linear, under torch.inference_mode, on the CPU.

Run by benches/edge_step.rs in the same session (or by hand). Prints, per
thread count, a line `RESULT torch_eager_us threads=N MEDIAN` (microseconds
per step, median over samples) that the Rust bench reads.
"""

import time

import torch
from torch import nn
from torch.nn import functional as F

VOCAB, HIDDEN = 1027, 256
STEPS_PER_SAMPLE, SAMPLES, WARMUP = 200, 21, 300


class RNNModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(VOCAB, HIDDEN)
        self.dense = nn.Linear(HIDDEN, VOCAB)

    def forward(self, inputs, state):
        x = F.one_hot(inputs.T.long(), VOCAB).to(torch.float32)
        y, state = self.rnn(x, state)
        return self.dense(y.reshape((-1, y.shape[-1]))), state


def median_step_us(model, threads):
    torch.set_num_threads(threads)
    state = torch.zeros(1, 1, HIDDEN)
    tokens = [torch.tensor([[i % VOCAB]]) for i in range(STEPS_PER_SAMPLE)]
    with torch.inference_mode():
        for i in range(WARMUP):
            _, state = model(tokens[i % STEPS_PER_SAMPLE], state)
        samples = []
        for _ in range(SAMPLES):
            t0 = time.perf_counter()
            for tok in tokens:
                logits, state = model(tok, state)
            samples.append((time.perf_counter() - t0) / STEPS_PER_SAMPLE * 1e6)
    samples.sort()
    return samples[len(samples) // 2], samples[0]


def main():
    torch.manual_seed(0)
    model = RNNModel().eval()
    default_threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, default threads {default_threads}")
    for threads in sorted({1, default_threads}):
        med, best = median_step_us(model, threads)
        print(
            f"PyTorch eager d2l step (one_hot, nn.GRU, nn.Linear), threads {threads}: "
            f"median {med:.2f} us, best {best:.2f} us"
        )
        print(f"RESULT torch_eager_us threads={threads} {med:.4f}")


if __name__ == "__main__":
    main()
