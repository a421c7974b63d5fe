#!/usr/bin/env python3
"""Regenerates recur's PTX from the CUDA C sources, with the pinned NVRTC.

    bash ptx/generate.sh            # writes ptx/<module>.ptx and ptx/ptxas-report.txt
    bash ptx/generate.sh --check    # CI: fails if the committed files differ

Each ptx/src/<module>.cu becomes ptx/<module>.ptx (target compute_80: every
kernel runs on sm_80 and later; the driver JIT-compiles it for the GPU at
hand), except the modules named in ARCH_90 (thread-block clusters,
distributed shared memory: target compute_90, loaded on sm_90 and later
only). ptxas then assembles every module for each of its archs (sm_80 and
sm_90; sm_90 only for compute_90 modules) and the registers, spills and
shared memory of every kernel go to ptx/ptxas-report.txt, so that a change
to a kernel shows its cost in review.

Needs the venv of ptx/setup.sh (NVRTC, ptxas and the CUDA headers from PyPI);
no GPU and no CUDA toolkit.
"""

import concurrent.futures
import ctypes
import difflib
import glob
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "src")
ARCH = "compute_80"
PTXAS_ARCHS = ["sm_80", "sm_90"]
# Modules that need sm_90 features (engine/src/ptx.rs loads them on sm_90+ only).
ARCH_90 = {"recurrent_cluster", "recurrent_cluster_regs", "generate_cluster", "generate_cluster_regs",
           "train_cluster"}


def module_arch(module):
    return "compute_90" if module in ARCH_90 else ARCH


def ptxas_archs(module):
    return ["sm_90"] if module in ARCH_90 else PTXAS_ARCHS
REPORT = os.path.join(HERE, "ptxas-report.txt")


def nvidia_dir(*parts):
    import nvidia  # namespace package of the pinned wheels

    for base in nvidia.__path__:
        path = os.path.join(base, *parts)
        if os.path.exists(path):
            return path
    sys.exit(f"missing {os.path.join(*parts)}: run ptx/setup.sh")


def load_nvrtc():
    lib = ctypes.CDLL(nvidia_dir("cuda_nvrtc", "lib", "libnvrtc.so.12"))
    for name in ["nvrtcCreateProgram", "nvrtcCompileProgram", "nvrtcGetPTXSize", "nvrtcGetPTX",
                 "nvrtcGetProgramLogSize", "nvrtcGetProgramLog", "nvrtcDestroyProgram", "nvrtcVersion"]:
        getattr(lib, name).restype = ctypes.c_int
    return lib


def nvrtc_version(lib):
    major, minor = ctypes.c_int(), ctypes.c_int()
    lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    return f"{major.value}.{minor.value}"


def compile_module(lib, path):
    """CUDA C file -> PTX text (raises with NVRTC's log on failure)."""
    name = os.path.basename(path)
    with open(path, "rb") as f:
        source = f.read()
    prog = ctypes.c_void_p()
    check(lib.nvrtcCreateProgram(ctypes.byref(prog), source, name.encode(), 0, None, None), "create")
    opts = [f"--gpu-architecture={module_arch(name[:-3])}", "-std=c++17", f"-I{SRC}",
            f"-I{nvidia_dir('cuda_runtime', 'include')}"]
    arr = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
    status = lib.nvrtcCompileProgram(prog, len(opts), arr)
    log_size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(log_size))
    log = ctypes.create_string_buffer(log_size.value)
    lib.nvrtcGetProgramLog(prog, log)
    log_text = log.value.decode(errors="replace").strip()
    if status != 0:
        raise SystemExit(f"NVRTC failed on {name}:\n{log_text}")
    if log_text:
        print(f"NVRTC notes for {name}:\n{log_text}", file=sys.stderr)
    size = ctypes.c_size_t()
    check(lib.nvrtcGetPTXSize(prog, ctypes.byref(size)), "size")
    buf = ctypes.create_string_buffer(size.value)
    check(lib.nvrtcGetPTX(prog, buf), "get")
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return buf.value.decode()


def check(status, what):
    if status != 0:
        raise SystemExit(f"NVRTC {what} failed with status {status}")


def ptxas_report(ptx_files):
    """Assembles every module for each arch; returns the report text."""
    ptxas = nvidia_dir("cuda_nvcc", "bin", "ptxas")
    jobs = [(path, arch) for path in ptx_files for arch in ptxas_archs(os.path.basename(path)[:-4])]

    def assemble(job):
        path, arch = job
        module = os.path.basename(path)[:-4]
        out = subprocess.run([ptxas, "-v", f"-arch={arch}", "-o", os.devnull, path],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"ptxas -arch={arch} failed on {module}.ptx:\n{out.stderr}")
        return parse_ptxas(out.stderr, module, arch)

    rows = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for part in pool.map(assemble, jobs):
            rows += part
    rows.sort()
    width = max(len(r[1]) for r in rows)
    lines = ["# ptxas -v for every kernel (regenerate: bash ptx/generate.sh)",
             "# module kernel arch registers stack-frame spill-stores spill-loads static-smem (bytes)"]
    for module, kernel, arch, regs, stack, st, ld, smem in rows:
        lines.append(f"{module:<14} {kernel:<{width}} {arch} regs={regs:<3} stack={stack:<4} "
                     f"spill_st={st:<4} spill_ld={ld:<4} smem={smem}")
    return "\n".join(lines) + "\n"


def parse_ptxas(text, module, arch):
    rows, current, props = [], None, {}
    for line in text.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            current = m.group(1)
            props[current] = {"regs": 0, "stack": 0, "st": 0, "ld": 0, "smem": 0}
            continue
        m = re.search(r"Function properties for (\w+)", line)
        if m:
            current = m.group(1)
            continue
        if current is None or current not in props:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            props[current]["stack"] = int(m.group(1))
            props[current]["st"], props[current]["ld"] = int(m.group(2)), int(m.group(3))
        m = re.search(r"Used (\d+) registers", line)
        if m:
            props[current]["regs"] = int(m.group(1))
            m2 = re.search(r"(\d+) bytes smem", line)
            props[current]["smem"] = int(m2.group(1)) if m2 else 0
    for k, v in props.items():
        rows.append((module, k, arch, v["regs"], v["stack"], v["st"], v["ld"], v["smem"]))
    return rows


def main():
    check_only = "--check" in sys.argv[1:]
    lib = load_nvrtc()
    print(f"NVRTC {nvrtc_version(lib)}, target {ARCH} ({', '.join(sorted(ARCH_90))}: compute_90)")
    sources = sorted(glob.glob(os.path.join(SRC, "*.cu")))
    generated = {}
    for path in sources:
        module = os.path.basename(path)[:-3]
        generated[os.path.join(HERE, module + ".ptx")] = compile_module(lib, path)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_files = []
        for path, text in generated.items():
            tmp_path = os.path.join(tmp, os.path.basename(path))
            with open(tmp_path, "w") as f:
                f.write(text)
            tmp_files.append(tmp_path)
        generated[REPORT] = ptxas_report(tmp_files)
    stale = sorted(set(glob.glob(os.path.join(HERE, "*.ptx"))) - set(generated))
    if check_only:
        bad = False
        for path, text in generated.items():
            old = open(path).read() if os.path.exists(path) else ""
            if old != text:
                bad = True
                rel = os.path.relpath(path, HERE)
                diff = list(difflib.unified_diff(old.splitlines(), text.splitlines(),
                                                 f"committed/{rel}", f"generated/{rel}", lineterm=""))
                print(f"{rel} differs from a fresh generation:\n" + "\n".join(diff[:40]))
        for path in stale:
            bad = True
            print(f"{os.path.relpath(path, HERE)} has no source in ptx/src")
        if bad:
            sys.exit("the committed PTX is not what ptx/src generates: run `bash ptx/generate.sh`")
        print(f"PTX up to date: {len(sources)} modules; ptxas {', '.join(PTXAS_ARCHS)} assembled every kernel "
              f"(sm_90 only: {', '.join(sorted(ARCH_90))})")
        return
    for path, text in generated.items():
        with open(path, "w") as f:
            f.write(text)
    for path in stale:
        os.remove(path)
    print(f"wrote {len(sources)} modules and {os.path.relpath(REPORT, HERE)}")


if __name__ == "__main__":
    main()
