"""Run the benchmark scripts in order (``make bench``) and print one summary of their targets.

Each benchmark runs as its own process (``benchmarks/bench_<name>.py``), writes
``benchmarks/results/<name>.json``, and this script reads those files back for the summary
(and writes ``benchmarks/results/summary.json``).

    .venv/bin/python benchmarks/run_all.py                 # all twelve, in order
    .venv/bin/python benchmarks/run_all.py autoattack scaleout --quick
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

#: The benchmarks in run order, numbered as docs/performance.md numbers them: name -> what it measures.
BENCHMARKS: dict[str, str] = {
    "adv_training": "1. PGD-k training step / clean step vs ideal k+1",
    "autoattack": "2. AutoAttack fast vs standard: speed-up and gap",
    "evaluator": "3. evaluator throughput (demo preset) and time split",
    "oneshot": "4. one-shot search epoch cost vs NNI DARTS, against the pass-count ideal",
    "search_quality": "5. search quality at equal budget vs random search (3 seeds)",
    "scaleout": "6. 2 Optuna workers vs 1 on one journal file",
    "table": "7. benchmark table: one lookup vs a live evaluation of the same cell",
    "diagnostics": "8. one-shot diagnostics on the table: supernet rank tau, parameter-free exports, zero-cost proxies",
    "jobs": "9. compare --jobs 2 on Ray vs --jobs 1: speed-up, identical results; Ray vs Dask overheads",
    "bounds": "10. linear (CROWN) vs interval bounds: certified accuracy, margin bound, DSRNA step cost",
    "table_compare": "11. 20-seed multi-trial comparison on the table; one-shot supernet epochs vs NNI DARTS",
    "oneshot_fixes": "12. DSRNA exports on the table: parameter-free drift and the fixes",
}


def markdown(names: list[str], folder: Path) -> str:
    """A Markdown table of the benchmarks' JSON results (the table of docs/performance.md)."""
    lines = ["| # | benchmark | result | target | met | command |", "|---|---|---|---|---|---|"]
    for i, name in enumerate(BENCHMARKS, 1):
        path = folder / f"{name}.json"
        if name not in names or not path.exists():
            continue
        data = json.loads(path.read_text())
        targets = data["targets"]
        met = "; ".join("yes" if t["met"] else "**no**" for t in targets) or "-"
        goals = "; ".join(f"{t['name']}: {C.value_text(t)} (goal {t['target']})" for t in targets) or "descriptive"
        quick = " (quick)" if data["quick"] else ""
        lines.append(f"| {i} | {name}{quick} | {data.get('headline', '')} | {goals} | {met} | `{data['command']}` |")
    machines = {json.loads((folder / f"{n}.json").read_text())["machine"]["cpu"] for n in names
                if (folder / f"{n}.json").exists()}
    return "\n".join(lines) + f"\n\nMachine(s): {', '.join(sorted(machines))}.\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help=f"a subset to run, in the given order (default all: {', '.join(BENCHMARKS)})")
    p.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    p.add_argument("--threads", type=int, default=1, help="torch threads per benchmark process (1)")
    p.add_argument("--out", default=str(C.RESULTS_DIR), help="results folder (benchmarks/results)")
    p.add_argument("--keep-going", action="store_true", help="run the remaining benchmarks after a failure")
    args = p.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        p.error(f"unknown benchmark(s) {unknown}; valid: {', '.join(BENCHMARKS)}")
    names = args.names or list(BENCHMARKS)
    here = Path(__file__).resolve().parent
    status: dict[str, dict] = {}
    start = time.perf_counter()
    for name in names:
        cmd = [sys.executable, str(here / f"bench_{name}.py"), "--threads", str(args.threads)]
        if Path(args.out).resolve() != C.RESULTS_DIR:  # the default stays out of the recorded command
            cmd += ["--out", args.out]
        if args.quick:
            cmd.append("--quick")
        print(f"\n=== {BENCHMARKS[name]}  ({' '.join(cmd[1:])})", flush=True)
        t0 = time.perf_counter()
        code = subprocess.call(cmd)
        status[name] = {"exit_code": code, "seconds": round(time.perf_counter() - t0, 1)}
        if code != 0:
            print(f"!!! bench_{name}.py failed with exit code {code}", flush=True)
            if not args.keep_going:
                break
    total = time.perf_counter() - start
    rows, summary = [], {"total_seconds": round(total, 1), "quick": args.quick, "benchmarks": {}}
    for name, st in status.items():
        path = Path(args.out) / f"{name}.json"
        data = json.loads(path.read_text()) if st["exit_code"] == 0 and path.exists() else None
        targets = data["targets"] if data else []
        summary["benchmarks"][name] = {**st, "targets": targets}
        if not targets:
            rows.append([name, "-" if data else "FAILED", "-", "-", st["seconds"]])
        for t in targets:
            rows.append([name, t["name"], C.value_text(t), f"{t['target']} {'MET' if t['met'] else 'MISSED'}",
                         st["seconds"]])
    C.print_table(f"Summary ({total / 60:.1f} min, {'quick' if args.quick else 'full'} runs)",
                  ["benchmark", "measure", "value", "target", "seconds"], rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    previous = out / "summary.json"
    if args.names and previous.exists():  # a subset run updates its rows and keeps the others
        kept = json.loads(previous.read_text()).get("benchmarks", {})
        summary["benchmarks"] = {**{k: v for k, v in kept.items() if k not in status}, **summary["benchmarks"]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(markdown(list(BENCHMARKS), out))
    print(f"  wrote {out / 'summary.json'} and {out / 'summary.md'}")
    return 0 if all(st["exit_code"] == 0 for st in status.values()) and len(status) == len(names) else 1


if __name__ == "__main__":
    sys.exit(main())
