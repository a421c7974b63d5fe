#!/usr/bin/env python3
"""PyTorch (cuDNN) side of benches/engine_cell_train.rs: nn.LSTM, H 768,
input 768, B 16, T 1,024, forward and forward + backward (parameter
gradients and the input's gradient, from a gradient on every output), f16
then f32, the inputs and upstream gradient resident on the GPU. Timed with
CUDA events over whole iterations.
    python3 benches/engine_cell_train_torch.py
"""
import torch


def time_ms(fn, runs=10):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(runs):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / runs


def main():
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    print(f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, {torch.cuda.get_device_name(0)}")
    H, I, B, T = 768, 768, 16, 1024
    for dtype, name in ((torch.float16, "F16"), (torch.float32, "F32")):
        layer = torch.nn.LSTM(I, H).to(dev, dtype)
        x = torch.empty(T, B, I, device=dev, dtype=dtype).uniform_(-1, 1).requires_grad_(True)
        dy = torch.empty(T, B, H, device=dev, dtype=dtype).uniform_(-1e-3, 1e-3)

        def forward():
            with torch.no_grad():
                layer(x)

        def forward_backward():
            layer.zero_grad(set_to_none=True)
            x.grad = None
            out, _ = layer(x)
            out.backward(dy)

        fwd = time_ms(forward)
        both = time_ms(forward_backward)
        print(f"torch cell train LSTM H={H} I={I} B={B} T={T} {name}: forward {fwd:.3} ms "
              f"({fwd * 1e3 / T:.2f} us/step), forward+backward {both:.3} ms ({both * 1e3 / T:.2f} us/step)",
              flush=True)


if __name__ == "__main__":
    main()
