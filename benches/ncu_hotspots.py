#!/usr/bin/env python3
"""Where a kernel's warps wait, instruction by instruction, from Nsight
Compute's source page (benches/engine_gpu_profile.sh writes it):

    ncu --section SourceCounters -o REPORT ...            # on the GPU machine
    ncu --import REPORT.ncu-rep --page source --print-source sass --csv > K.csv
    python3 benches/ncu_hotspots.py K.csv [--top 40] [--window 32]

prints, from the per-instruction warp stall samples (PC sampling):
- the kernel's samples by stall reason;
- its samples in windows of consecutive instructions (where the time goes,
  without loop detection: a persistent kernel's step loop shows as the
  windows that hold most samples);
- samples by opcode;
- the instructions with the most samples, each with its reasons and the
  instructions just before it (a stall is charged to the instruction that
  waits, and what it waits for is usually a few lines above).

Nsight Compute's CSV: an optional banner row (the kernel), then the header
(Address, Source, "Warp Stall Sampling (All Samples)", one column per stall
reason, ...), then one row per SASS instruction. Column names moved between
Nsight Compute versions, so they are matched loosely. `--self-test` checks
the parsing and the tables on a small synthetic report (CI runs it: the
script has never read a real report).
"""

import argparse
import collections
import csv
import io
import re
import sys

ALL_SAMPLES = "Warp Stall Sampling (All Samples)"
REASON_PREFIXES = ("smsp__pcsamp_warps_issue_stalled_", "stall_")


def number(text):
    """A cell as a number: '1,234' and '' (no samples) included."""
    text = (text or "").strip().replace(",", "")
    try:
        return float(text)
    except ValueError:
        return 0.0


def reason_columns(header):
    """{column index: reason} of the issued-or-not stall columns, from one
    naming family only (the metric names where present, else the short
    ones), so that no reason is counted twice."""
    for prefix in REASON_PREFIXES:
        found = {
            i: c[len(prefix):] for i, c in enumerate(header) if c.startswith(prefix) and not is_not_issued(c)
        }
        if found:
            return found
    return {}


def is_not_issued(column):
    c = column.lower()
    return c.endswith("_not_issued") or "not issued" in c or "not-issued" in c


def is_header(row):
    return "Source" in row and any(c.startswith(ALL_SAMPLES) for c in row)


class Report:
    """One kernel's rows: instructions in address order, with their
    samples in total and by reason."""

    def __init__(self, banner, header, rows):
        self.banner = banner
        self.src = header.index("Source")
        self.addr = header.index("Address") if "Address" in header else None
        self.all = next(i for i, c in enumerate(header) if c.startswith(ALL_SAMPLES))
        self.reasons = reason_columns(header)
        self.ins = []
        for r in rows:
            if len(r) != len(header) or not r[self.src].strip():
                continue
            self.ins.append(
                {
                    "addr": r[self.addr].strip() if self.addr is not None else str(len(self.ins)),
                    "source": " ".join(r[self.src].split()),
                    "samples": number(r[self.all]),
                    "reasons": {name: number(r[i]) for i, name in self.reasons.items()},
                }
            )
        if not self.ins:
            raise ValueError(f"no instruction rows for {banner or 'the kernel'}")
        self.total = sum(i["samples"] for i in self.ins)


def parse(rows):
    """The CSV's kernels (one per header row; a report of several launches
    prints each launch's banner, header and rows in turn)."""
    heads = [i for i, r in enumerate(rows) if is_header(r)]
    if not heads:
        raise ValueError(f"no header row with 'Source' and '{ALL_SAMPLES}' in the CSV")
    reports = []
    for n, h in enumerate(heads):
        end = heads[n + 1] if n + 1 < len(heads) else len(rows)
        # The banner: the rows between the previous kernel's last
        # instruction row and this header that are not instruction rows.
        b = h
        while b > (heads[n - 1] if n else -1) + 1 and len(rows[b - 1]) != len(rows[h]):
            b -= 1
        banner = " ".join(" ".join(r) for r in rows[b:h]).strip()
        reports.append(Report(banner, rows[h], rows[h + 1:end]))
    return reports


def opcode(source):
    """'@!P1 LDG.E.128 R4, [R2.64]' -> 'LDG'."""
    words = source.split()
    if words and words[0].startswith("@"):
        words = words[1:]
    return re.split(r"[.\s]", words[0])[0] if words else "?"


def pct(part, whole):
    return f"{100.0 * part / whole:5.1f} %" if whole else "    -"


def top_reasons(reasons, n=3):
    items = sorted(((v, k) for k, v in reasons.items() if v > 0), reverse=True)[:n]
    return ", ".join(f"{k} {v:.0f}" for v, k in items)


def summary(report, top, window, context):
    out = io.StringIO()
    p = lambda *a: print(*a, file=out)  # noqa: E731
    total = report.total
    p(f"# {report.banner or 'kernel'}")
    p(f"{len(report.ins)} instructions, {total:.0f} warp stall samples")
    if total == 0:
        p("no samples: was SourceCounters collected (PC sampling)?")
        return out.getvalue()

    p("\n## samples by stall reason")
    by_reason = collections.Counter()
    for i in report.ins:
        for k, v in i["reasons"].items():
            by_reason[k] += v
    for k, v in by_reason.most_common():
        if v > 0:
            p(f"  {k:<28} {v:8.0f}  {pct(v, total)}")

    p(f"\n## samples in windows of {window} instructions (those with ≥ 1 %)")
    for start in range(0, len(report.ins), window):
        part = report.ins[start:start + window]
        s = sum(i["samples"] for i in part)
        if s >= 0.01 * total:
            ops = collections.Counter(opcode(i["source"]) for i in part)
            p(
                f"  [{start:5d}, {start + len(part):5d}) {part[0]['addr']:>8}: {s:8.0f}  {pct(s, total)}"
                f"  {top_reasons(collections.Counter({k: sum(i['reasons'].get(k, 0) for i in part) for k in by_reason}))}"
                f"  | {' '.join(f'{o}×{c}' for o, c in ops.most_common(6))}"
            )

    p("\n## samples by opcode")
    by_op = collections.Counter()
    for i in report.ins:
        by_op[opcode(i["source"])] += i["samples"]
    for k, v in by_op.most_common(15):
        if v > 0:
            p(f"  {k:<10} {v:8.0f}  {pct(v, total)}")

    p(f"\n## the {top} instructions with the most samples, each after the {context} before it")
    ranked = sorted(range(len(report.ins)), key=lambda n: -report.ins[n]["samples"])[:top]
    for n in sorted(ranked):
        i = report.ins[n]
        if i["samples"] <= 0:
            continue
        p(f"  #{n} {i['addr']}: {i['samples']:.0f} samples ({pct(i['samples'], total).strip()}): {top_reasons(i['reasons'])}")
        for m in range(max(0, n - context), n):
            p(f"        {report.ins[m]['addr']:>8}  {report.ins[m]['source']}")
        p(f"    >>> {i['addr']:>8}  {i['source']}")
    return out.getvalue()


def self_test():
    """A synthetic report in Nsight Compute's shape: banner, header, rows;
    a commented number, an empty cell, a predicated opcode and a duplicate
    reason under its short name."""
    text = (
        '"Kernel Name","rec_rcluster16_f32_gru_after"\n'
        '"Address","Source","Warp Stall Sampling (All Samples)","Warp Stall Sampling (Not-issued Samples)",'
        '"Instructions Executed","smsp__pcsamp_warps_issue_stalled_long_scoreboard",'
        '"smsp__pcsamp_warps_issue_stalled_long_scoreboard_not_issued",'
        '"smsp__pcsamp_warps_issue_stalled_wait","stall_long_sb"\n'
        '"0x7f00","LDS.128 R32, [R85]","10","8","1,400","0","0","10","0"\n'
        '"0x7f10","FFMA R1, R2, R3, R4","","","1400","","","",""\n'
        '"0x7f20","@!P1 SYNCS.PHASECHK.TRANS64.TRYWAIT P1, [R33+URZ], R32","1,200","1000","1400","1,150","900","50","1150"\n'
        '"0x7f30","LDG.E R73, desc[UR8][R82.64]","40","30","1400","40","30","0","40"\n'
    )
    rows = list(csv.reader(io.StringIO(text)))
    # A report of two launches prints both in turn.
    reports = parse(rows + rows)
    assert len(reports) == 2 and [len(r.ins) for r in reports] == [4, 4], reports
    assert reports[1].banner == "Kernel Name rec_rcluster16_f32_gru_after", reports[1].banner
    r = reports[0]
    assert len(r.ins) == 4, r.ins
    assert r.total == 1250.0, r.total
    assert sorted(r.reasons.values()) == ["long_scoreboard", "wait"], r.reasons
    assert r.ins[2]["reasons"]["long_scoreboard"] == 1150.0
    assert r.ins[1]["samples"] == 0.0
    assert opcode(r.ins[2]["source"]) == "SYNCS"
    s = summary(r, top=2, window=2, context=2)
    assert "4 instructions, 1250 warp stall samples" in s, s
    assert "SYNCS" in s and "96.0 %" in s and "long_sb" not in s, s
    # The top instruction is printed after the two before it.
    block = s[s.index("#2 0x7f20"):]
    assert block.index("LDS.128") < block.index(">>>"), s
    try:
        parse(rows[2:])
    except ValueError:
        pass
    else:
        raise AssertionError("a CSV without its header must be refused")
    print("ncu_hotspots.py self-test passed")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("csv", nargs="*", help="ncu --page source --print-source sass --csv output")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--context", type=int, default=6)
    ap.add_argument("--self-test", action="store_true")
    a = ap.parse_args()
    if a.self_test:
        self_test()
        return 0
    if not a.csv:
        ap.error("no CSV given")
    status = 0
    for path in a.csv:
        try:
            with open(path, newline="") as f:
                reports = parse(list(csv.reader(f)))
        except (OSError, ValueError) as e:
            print(f"{path}: {e}", file=sys.stderr)
            status = 1
            continue
        for report in reports:
            print(summary(report, a.top, a.window, a.context))
    return status


if __name__ == "__main__":
    sys.exit(main())
