#!/usr/bin/env python3
"""What a GPU session's bench logs say about the code in docs/gpu-pending.md.

    python3 benches/gpu_verdicts.py --new CALL1_OUT CALL2_OUT \\
        [--base benches/results/engine_train_h100_run7 benches/results/engine_h100_run6/call4 ...] [--check]

Reads the bench logs of the new run (the folders `engine_train_gpu.sh run`
and `engine_gpu_run.sh` write: bench_engine_train.log,
bench_engine_cell_train.log, bench_engine_forward.log,
bench_engine_generate.log, torch_train.log, torch_cell_train.log,
torch_forward.log) and of a baseline run (the same files, committed under
benches/results/), and prints markdown:

- every figure present in both runs, new against baseline;
- the choices gpu-pending.md's "Once it passes" leaves to the GPU, each
  from two lines of the new run (reduce-scatter against gather backward,
  register against shared-memory cluster generation, flagged against
  barrier tensor-core kernel, one-word against two-word grid barrier);
- the new run against PyTorch's figures from the same run.

It decides nothing and edits nothing: the ratios are for the person
reading them. `--check` fails if a bench log present in --new has none
of the lines its parser reads (a bench's line format changed): CI runs it
on the smoke benches' logs so that the format is kept.
"""
import argparse
import os
import re
import sys

NUM = r"(-?[\d.]+)"


def read(folders, name):
    """The lines of `name` in the first folder that has it, or None."""
    for folder in folders:
        path = os.path.join(folder, name)
        if os.path.exists(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.read().splitlines()
    return None


SHAPE = r"((?:[BHVTIPN]=\d+ ?)+)"
# The lines whose shapes two logs of a bench must share to be compared.
SHAPE_LINES = {"train": "^recur train step " + SHAPE, "forward": "^(?:d2l|lstm) " + SHAPE,
               "generate": "^generate " + SHAPE, "cell": "^cell train LSTM " + SHAPE}


def shapes(lines, kind):
    """The shapes of a log's main lines (`B=32 H=256 V=1027 T=35`, …)."""
    found = set()
    for line in lines or []:
        if m := re.match(SHAPE_LINES[kind], line):
            found.add(m[1].strip())
    return frozenset(found)


def norm(label):
    return " ".join(label.split())


def train_steps(lines):
    """bench_engine_train: {(cell, prec, form): {"step", "loops", phases…}}."""
    out = {}
    step = re.compile(r"^recur train step B=\d+ H=\d+ V=\d+ T=\d+ (\w+) (F32|F16) \S+ "
                      r"\[([\w-]+): \(([^)]*)\)\]: " + NUM + " us/step")
    wall = re.compile(r"^\s+(\w+) (F32|F16) \[([\w-]+)\] phases: forward " + NUM + r" us, backward " + NUM +
                      r" us, clip \+ Adam " + NUM + " us")
    gpu = re.compile(r"^\s+(\w+) (F32|F16) \[([\w-]+)\] GPU time per phase \([^)]*\): (.*)$")
    for line in lines or []:
        if m := step.match(line):
            out.setdefault(m.group(1, 2, 3), {}).update(step=float(m[5]), loops=m[4])
        elif m := wall.match(line):
            out.setdefault(m.group(1, 2, 3), {}).update(
                {"forward (wall)": float(m[4]), "backward (wall)": float(m[5]), "clip + Adam (wall)": float(m[6])})
        elif m := gpu.match(line):
            phases = re.findall(r"(?:^|, )([^,(]+?) " + NUM + " us", m[4])
            out.setdefault(m.group(1, 2, 3), {}).update({f"{k} (GPU)": float(v) for k, v in phases})
    return out


def figures(lines):
    """Summary lines `LABEL: [layer ]X us/step|us/char…` of the forward,
    generation and PyTorch benches: {label: X}; grid barrier lines as
    `grid barrier, N blocks` and `one-word flip barrier, N blocks`."""
    out = {}
    fig = re.compile(r"^\s*([^:]+): (?:layer )?" + NUM + r" us/(?:step|char)")
    bar = re.compile(r"^grid barrier, (\d+) blocks: " + NUM + r" us \(one-word flip barrier: " + NUM + " us\\)")
    for line in lines or []:
        if m := bar.match(line):
            out[f"grid barrier, {m[1]} blocks"] = float(m[2])
            out[f"one-word flip barrier, {m[1]} blocks"] = float(m[3])
        elif m := fig.match(line):
            out[norm(m[1])] = float(m[2])
    return out


def forward_rows(lines):
    """The d2l forward's automatic register cluster lines: {(cell, precision):
    rows per cluster the planner took}."""
    out = {}
    pat = re.compile(r"^d2l " + SHAPE + r"(\S+)\s+(f32|f16): layer .*\(ClusterRegs .*rows=(\d+)\)")
    for line in lines or []:
        if m := pat.match(line):
            out[(m[2], m[3])] = int(m[4])
    return out


def cell_train(lines, prefix):
    """bench_engine_cell_train / its torch twin: {precision: (fwd ms, fwd+bwd ms)}."""
    out = {}
    pat = re.compile("^" + prefix + r"cell train LSTM H=\d+ I=\d+ B=\d+ T=\d+ "
                     r"(F16|F32|F16 \[per-step\]|F16 \[mma units=\d+(?: flagged| block-flags)?\]): "
                     r"forward " + NUM + r" ms .*forward\+backward " + NUM + " ms")
    for line in lines or []:
        if m := pat.match(line):
            out[m[1]] = (float(m[2]), float(m[3]))
    return out


def ratio(new, old):
    """How many times faster `new` is than `old` (old / new; < 1: slower)."""
    if old is None or new is None or new <= 0 or old <= 0:
        return "—"
    return f"{old / new:.2f}×"


def table(rows, head):
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()


LOGS = {"train": "bench_engine_train.log", "forward": "bench_engine_forward.log",
        "generate": "bench_engine_generate.log", "cell": "bench_engine_cell_train.log"}


def load(folders):
    return {
        "train": train_steps(read(folders, LOGS["train"])),
        "forward": figures(read(folders, LOGS["forward"])),
        "forward_rows": forward_rows(read(folders, LOGS["forward"])),
        "generate": figures(read(folders, LOGS["generate"])),
        "cell": cell_train(read(folders, LOGS["cell"]), ""),
        "shapes": {kind: shapes(read(folders, log), kind) for kind, log in LOGS.items()},
        "torch_train": figures(read(folders, "torch_train.log")),
        "torch_forward": figures(read(folders, "torch_forward.log")),
        "torch_cell": cell_train(read(folders, "torch_cell_train.log"), "torch "),
    }


def against_baseline(new, base, every):
    """Rows for the figures in both runs: the default training form
    (`cluster`) and the forward lines but the sweeps, or `every` one."""
    print("## New run against the baseline run\n")
    rows = []
    for kind in LOGS:
        if new["shapes"][kind] != base["shapes"][kind] and new[kind] and base[kind]:
            print(f"- {LOGS[kind]}: not compared, the runs' shapes differ\n")
            new = dict(new, **{kind: {}})
    for key in sorted(set(new["train"]) & set(base["train"])):
        if not every and key[2] != "cluster":
            continue
        for what, v in new["train"][key].items():
            old = base["train"][key].get(what)
            if what != "loops" and old is not None:
                rows.append([" ".join(key), what, f"{old:.1f}", f"{v:.1f}", ratio(v, old)])
    for kind in ("forward", "generate"):
        for label in sorted(set(new[kind]) & set(base[kind])):
            if not every and label.startswith("sweep "):
                continue
            old, v = base[kind][label], new[kind][label]
            rows.append([label, "µs", f"{old:.3f}", f"{v:.3f}", ratio(v, old)])
    for prec in sorted(set(new["cell"]) & set(base["cell"])):
        for i, what in enumerate(("forward ms", "forward+backward ms")):
            old, v = base["cell"][prec][i], new["cell"][prec][i]
            rows.append([f"cell train LSTM {prec}", what, f"{old:.3f}", f"{v:.3f}", ratio(v, old)])
    if rows:
        table(rows, ["what", "figure", "baseline", "new", "faster by"])
    else:
        print("(no figure in both runs)\n")


def best(figs, pattern):
    """The smallest figure whose label matches `pattern`, with its label."""
    hits = [(v, k) for k, v in figs.items() if re.search(pattern, k)]
    return min(hits) if hits else (None, None)


FORWARD = ("forward loop (GPU)", "forward (wall)", "step")
BACKWARD = ("backward loop (GPU)", "backward (wall)")
# The training bench's choices, each between two forms of the same run:
# (the form of a line, the form it is compared with, the choice, its
# figures, whether the line's form is the candidate). `cluster` takes the
# ring products, `cluster-tr-gemm` tr_gemm's; `cluster-mma` and
# `persistent-mma` put the forward's product on tensor cores, and
# `persistent-mma` the backward's too.
TRAIN_CHOICES = [
    ("cluster-tr-gemm", "cluster", "products: ring vs tr_gemm",
     ("logits + loss (GPU)", "backward: dhs (GPU)", "weight gradients (GPU)", "step"), False),
    ("cluster-mma", "cluster", "training forward: ClusterMma vs ClusterRegs", FORWARD, True),
    ("persistent-mma", "persistent", "training forward: PersistentMma vs Persistent", FORWARD, True),
    ("persistent-mma", "persistent", "training backward: PersistentMma vs Persistent", BACKWARD, True),
    ("cluster-rs", "cluster", "backward: reduce-scatter vs gather",
     ("backward loop (GPU)", "backward (wall)", "step"), True),
]


def choices(new):
    print("## The choices gpu-pending.md leaves to the GPU (new run only)\n")
    rows = []
    train = new["train"]
    for (cell, prec, form), v in sorted(train.items()):
        for line_form, other_form, choice, whats, line_is_candidate in TRAIN_CHOICES:
            if form != line_form:
                continue
            other = train.get((cell, prec, other_form), {})
            now, candidate = (other, v) if line_is_candidate else (v, other)
            for what in whats:
                a, b = now.get(what), candidate.get(what)
                if a is not None and b is not None:
                    rows.append([f"{cell} {prec} {choice}", what, f"{a:.1f}", f"{b:.1f}", ratio(b, a)])
    gen = new["generate"]
    for label, v in sorted(gen.items()):
        if m := re.match(r"forced (\S+) (F32|F16) greedy ClusterRegs", label):
            old, _ = best(gen, rf"^forced {re.escape(m[1])} {m[2]} greedy Cluster cluster=Some\(16\)")
            rows.append([f"generation {m[1]} {m[2]}: ClusterRegs vs Cluster 16", "µs/char",
                         f"{old:.3f}" if old is not None else "—", f"{v:.3f}", ratio(v, old)])
        # The generation options on the same path, each against the form
        # before it: the recurrent product ahead (during the logits
        # exchange) against after the draw; block sends, both ahead; the
        # greedy draw split across the cluster, both ahead.
        for form, before, choice in (
            ("greedy-ahead", "greedy", "product ahead vs after the draw"),
            ("greedy-ahead-blocks", "greedy-ahead", "block sends vs sends per item (product ahead)"),
            ("greedy-ahead-split", "greedy-ahead", "split draw vs whole-row draw (product ahead)"),
        ):
            if m := re.match(rf"forced (\S+) (F32|F16) {form} (.*)$", label):
                old = gen.get(f"forced {m[1]} {m[2]} {before} {m[3]}")
                rows.append([f"generation {m[1]} {m[2]} {m[3]}: {choice}", "µs/char",
                             f"{old:.3f}" if old is not None else "—", f"{v:.3f}", ratio(v, old)])
    # The H 768 f16 persistent tensor-core loops (the trainer's default
    # where no CUDA-core persistent loop fits) against one launch per step,
    # what they replaced; same run.
    cell = new["cell"]
    if "F16" in cell and "F16 [per-step]" in cell:
        for i, what in enumerate(("forward ms", "forward+backward ms")):
            a, b = cell["F16 [per-step]"][i], cell["F16"][i]
            rows.append(["cell train LSTM F16: its loops (H 768: PersistentMma both ways) vs per-step", what,
                         f"{a:.3f}", f"{b:.3f}", ratio(b, a)])
    # The same loops at 16 hidden units per block (half the backward's
    # bytes through L2, twice each block's products) against 8.
    base = cell.get("F16 [mma units=8]")
    for label, v in sorted(cell.items()):
        if base and (m := re.match(r"F16 \[mma units=(\d+)\]$", label)) and m[1] != "8":
            for i, what in enumerate(("forward ms", "forward+backward ms")):
                rows.append([f"cell train LSTM F16 tensor-core loops: {m[1]} vs 8 units per block", what,
                             f"{base[i]:.3f}", f"{v[i]:.3f}", ratio(v[i], base[i])])
    # The tensor-core loops on flags against grid barriers: the forward's
    # row is the forward's flag form's (per-block flags, or h in flagged
    # words); forward+backward minus it, the flagged backward's.
    for label, form in (("block-flags", "block flags"), ("flagged", "flagged words")):
        flagged = cell.get(f"F16 [mma units=8 {label}]")
        if base and flagged:
            for i, what in enumerate(("forward ms", "forward+backward ms")):
                rows.append([f"cell train LSTM F16 tensor-core loops: {form} vs grid barriers (8 units)", what,
                             f"{base[i]:.3f}", f"{flagged[i]:.3f}", ratio(flagged[i], base[i])])
    fwd = new["forward"]
    for what, flagged, barrier in (
        ("H 768 LSTM", r"^lstm H=\d+ B=\d+ PersistentMmaFlagged", r"^lstm f16 mma units="),
        ("d2l GRU f16", r"^d2l gru-reset-after f16 PersistentMmaFlagged",
         r"^sweep d2l gru-reset-after f16 PersistentMma units="),
    ):
        (a, la) = best(fwd, barrier)
        # The same kernel with a flag per block (its lines name the path
        # PersistentMmaBlockFlags), and the kernel with flagged words.
        for form, pattern in (("block flags", flagged.replace("PersistentMmaFlagged", "PersistentMmaBlockFlags")),
                              ("flagged", flagged)):
            (b, lb) = best(fwd, pattern)
            if b is not None:
                rows.append([f"{what}: {form} vs grid barrier (best units)", f"{la} / {lb}",
                             f"{a:.3f}" if a is not None else "—", f"{b:.3f}", ratio(b, a)])
    # The tensor-core cluster forward (forced only) against the register one
    # (the shared-memory one where a run has no register line), each at its
    # best rows per cluster.
    for cell, prec in sorted({m.groups() for k in fwd
                              if (m := re.match(r"sweep d2l (\S+) (f32|f16) ClusterMma ", k))}):
        (a, la), (b, lb) = (best(fwd, rf"^sweep d2l {re.escape(cell)} {prec} {path} ")
                            for path in ("ClusterRegs", "ClusterMma"))
        now = "ClusterRegs"
        if a is None:
            (a, la), now = best(fwd, rf"^sweep d2l {re.escape(cell)} {prec} Cluster "), "Cluster"
        rows.append([f"d2l {cell} {prec}: ClusterMma vs {now} (best rows)", f"{la} / {lb}",
                     f"{a:.3f}" if a is not None else "—", f"{b:.3f}", ratio(b, a)])
    # The rows per cluster the planner takes for the register cluster
    # forward (the fewest whose clusters have their SMs alone, else the
    # fewest all resident) against the sweep's fastest rows, both sweep lines.
    for (cell, prec), n in sorted(new.get("forward_rows", {}).items()):
        a, _ = best(fwd, rf"^sweep d2l {re.escape(cell)} {prec} ClusterRegs cluster=16 rows={n} ")
        (b, lb) = best(fwd, rf"^sweep d2l {re.escape(cell)} {prec} ClusterRegs ")
        if b is not None:
            rows.append([f"d2l {cell} {prec}: the sweep's fastest rows vs the planner's rows={n}",
                         f"{lb.split(' ClusterRegs ')[-1]}", f"{a:.3f}" if a is not None else "—",
                         f"{b:.3f}", ratio(b, a)])
    # GRU reset-before's register cluster forward (forced only) against the
    # shared-memory one it would replace, each at its best rows.
    for prec in sorted({m[1] for k in fwd if (m := re.match(r"sweep d2l gru-reset-before (f32|f16) ClusterRegs ", k))}):
        (a, la), (b, lb) = (best(fwd, rf"^sweep d2l gru-reset-before {prec} {path} ")
                            for path in ("Cluster", "ClusterRegs"))
        rows.append([f"d2l gru-reset-before {prec}: ClusterRegs vs Cluster (best rows)", f"{la} / {lb}",
                     f"{a:.3f}" if a is not None else "—", f"{b:.3f}", ratio(b, a)])
    for label, v in sorted(fwd.items(), key=lambda kv: int(re.sub(r"\D", "", kv[0]) or 0)):
        if m := re.match(r"one-word flip barrier, (\d+) blocks", label):
            old = fwd.get(f"grid barrier, {m[1]} blocks")
            rows.append([f"grid barrier, {m[1]} blocks: one-word flip vs grid_sync", "µs",
                         f"{old:.3f}" if old is not None else "—", f"{v:.3f}", ratio(v, old)])
    if rows:
        table(rows, ["choice", "figure", "now", "candidate", "candidate faster by"])
    else:
        print("(none of these lines in the new run)\n")


TORCH_TRAIN = {"rnn-tanh": ["RnnTanh"], "gru": ["GruResetAfter", "GruResetBefore"], "lstm": ["Lstm"]}
TORCH_FORWARD = {"rnn-tanh": "rnn-tanh", "gru": "gru-reset-after", "lstm": "lstm"}


def against_torch(new):
    print("## New run against PyTorch (same run)\n")
    rows = []
    for label, us in sorted(new["torch_train"].items()):
        # Both of PyTorch's loops: `.item()` every step (the seeds') and
        # every 8 steps (as recur's bench reads its statistics).
        m = re.match(r"torch train step B=\d+ H=\d+ V=\d+ T=\d+ (\S+) f32 Adam\+clip \((item every [^)]*)\)", label)
        for cell in TORCH_TRAIN.get(m[1] if m else "", []):
            ours = new["train"].get((cell, "F32", "cluster"), {}).get("step")
            if ours is not None:
                rows.append([f"train step {cell} F32 [cluster] vs {m[1]} ({m[2]})", f"{us:.1f}", f"{ours:.1f}",
                             ratio(ours, us)])
    for label, us in sorted(new["torch_forward"].items()):
        if m := re.match(r"torch d2l (B=\d+ H=\d+ V=\d+ T=\d+) (\S+) float(32|16)$", label):
            ours = new["forward"].get(f"d2l {m[1]} {TORCH_FORWARD.get(m[2], m[2])} f{m[3]}")
            if ours is not None:
                rows.append([f"d2l layer {m[2]} f{m[3]}", f"{us:.3f}", f"{ours:.3f}", ratio(ours, us)])
        elif m := re.match(r"torch lstm (H=\d+ I=\d+ B=\d+ T=\d+) f16$", label):
            ours, _ = best(new["forward"], rf"^lstm {m[1]} f16 dense input$")
            if ours is not None:
                rows.append([f"LSTM {m[1]} f16 forward", f"{us:.3f}", f"{ours:.3f}", ratio(ours, us)])
    for prec, (fwd, both) in sorted(new["torch_cell"].items()):
        if prec in new["cell"]:
            rows.append([f"cell train LSTM {prec} forward+backward (ms)", f"{both:.3f}",
                         f"{new['cell'][prec][1]:.3f}", ratio(new["cell"][prec][1], both)])
    if rows:
        table(rows, ["what", "PyTorch", "recur", "recur faster by"])
    else:
        print("(no PyTorch log in the new run)\n")


def check(folders, new):
    """Each bench log present in `folders` gave at least one figure."""
    bad = [log for kind, log in LOGS.items() if read(folders, log) is not None and not new[kind]]
    phases = [v for v in new["train"].values() if "backward loop (GPU)" in v and "forward (wall)" in v]
    if read(folders, LOGS["train"]) is not None and not phases:
        bad.append(LOGS["train"] + " (phases)")
    for log in bad:
        print(f"error: {log}: no line this script reads (has its format changed?)", file=sys.stderr)
    return not bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--new", nargs="+", required=True, help="folders of the new run's logs")
    results = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    ap.add_argument("--base", nargs="*", default=[
        os.path.join(results, "engine_train_h100_run7"), os.path.join(results, "engine_h100_run6", "call4"),
        os.path.join(results, "engine_h100_run6", "call5")],
        help="folders of the baseline run's logs, the first that has a log is read "
        "(default: training run 7, forward and generation run 6)")
    ap.add_argument("--check", action="store_true", help="fail if a present bench log has no line read")
    ap.add_argument("--all", action="store_true", help="every figure in both runs (all training forms, sweeps)")
    args = ap.parse_args()
    if not any(read(args.new, log) is not None for log in list(LOGS.values()) + ["torch_train.log"]):
        sys.exit(f"error: no bench log ({', '.join(LOGS.values())}) in {' '.join(args.new)}")
    new, base = load(args.new), load(args.base)
    print(f"# Bench logs: {' '.join(args.new)} against {' '.join(args.base)}\n")
    against_baseline(new, base, args.all)
    choices(new)
    against_torch(new)
    if args.check and not check(args.new, new):
        sys.exit(1)


if __name__ == "__main__":
    main()
