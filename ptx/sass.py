#!/usr/bin/env python3
"""A static look at the machine code (SASS) of recur's kernels, no GPU needed.

    bash ptx/sass.sh MODULE [KERNEL_REGEX] [--arch sm_90] [--dump DIR]

compiles ptx/src/MODULE.cu as it is now (NVRTC, as build.py), assembles it
with ptxas and disassembles it with cuobjdump, then prints for every kernel
matching KERNEL_REGEX its registers, its instruction count and each loop
(a backward branch) with its length in instructions and what it holds:
runtime integer divisions (I2F.RP: some 20 instructions on the conversion
pipe each), block barriers, tensor-core products, global and shared loads.
A persistent kernel's per-step cost is its time loop's instruction count
times the trips of the loops inside it; this is the measure a session
without a GPU can take of a change to such a loop. `--dump DIR` also writes
each kernel's SASS to DIR/<kernel>.sass; loops shorter than
`--min-loop` (16) instructions are counted, not listed.

Needs ptx/.venv with the pins of ptx/setup.sh; ptx/sass.sh adds cuobjdump
and nvdisasm to it.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build  # noqa: E402  (compile_module, load_nvrtc, nvidia_dir)

COUNTED = [
    ("div", r"I2F(\.U32)?\.RP"),
    ("bar", r"BAR\.SYNC"),
    ("mma", r"HMMA"),
    ("ldg", r"LDG"),
    ("lds", r"LDS"),
    ("shfl", r"SHFL"),
]


def tool(name):
    path = build.nvidia_dir("cu13", "bin", name)
    if not os.access(path, os.X_OK):
        os.chmod(path, 0o755)
    return path


def kernel_stats(name, body):
    """(instruction count, [(start, end, length, counts)]) of one kernel."""
    ins = [(int(a, 16), t) for a, t in re.findall(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", body)]
    loops = []
    for addr, text in ins:
        m = re.search(r"\bBRA\b.*?0x([0-9a-f]+)", text)
        if m and int(m.group(1), 16) < addr:
            start = int(m.group(1), 16)
            inside = [t for a, t in ins if start <= a <= addr]
            counts = {k: sum(1 for t in inside if re.search(p, t)) for k, p in COUNTED}
            loops.append((start, addr, len(inside), counts))
    return len(ins), loops


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("module")
    ap.add_argument("kernels", nargs="?", default=".")
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("--dump")
    ap.add_argument("--min-loop", type=int, default=16, help="hide loops shorter than this (default 16)")
    args = ap.parse_args()
    src = os.path.join(build.SRC, args.module + ".cu")
    ptx = build.compile_module(build.load_nvrtc(), src)
    with tempfile.TemporaryDirectory() as tmp:
        ptx_path, cubin = os.path.join(tmp, "m.ptx"), os.path.join(tmp, "m.cubin")
        with open(ptx_path, "w") as f:
            f.write(ptx)
        ptxas = build.nvidia_dir("cuda_nvcc", "bin", "ptxas")
        verbose = subprocess.run([ptxas, "-v", f"-arch={args.arch}", "-o", cubin, ptx_path],
                                 capture_output=True, text=True, check=True).stderr
        env = dict(os.environ, PATH=os.path.dirname(tool("nvdisasm")) + os.pathsep + os.environ["PATH"])
        sass = subprocess.run([tool("cuobjdump"), "-sass", cubin], capture_output=True, text=True,
                              check=True, env=env).stdout
    regs = dict(re.findall(r"Compiling entry function '(\w+)'.*?Used (\d+) registers", verbose, re.S))
    for part in sass.split("Function : ")[1:]:
        name = part.split()[0]
        if not re.search(args.kernels, name):
            continue
        n, loops = kernel_stats(name, part)
        print(f"{name} ({args.arch}): {regs.get(name, '?')} registers, {n} instructions")
        short = [lp for lp in loops if lp[2] < args.min_loop]
        for start, end, length, counts in loops:
            if length < args.min_loop:
                continue
            held = " ".join(f"{k}={v}" for k, v in counts.items() if v)
            print(f"  loop {start:05x}-{end:05x}: {length:5d} instructions  {held}")
        if short:
            print(f"  ({len(short)} loops shorter than {args.min_loop} instructions not shown)")
        if args.dump:
            os.makedirs(args.dump, exist_ok=True)
            with open(os.path.join(args.dump, name + ".sass"), "w") as f:
                f.write(part)


if __name__ == "__main__":
    main()
