"""The AutoML benchmark: Atelier against FLAML, mljar-supervised, AutoGluon-Tabular and a
default LightGBM on the same files, budget and threads.

    nice -n 19 .venv/bin/python bench/automl/run.py [--budgets 30 60] [--sets a b] [--systems x y]
    nice -n 19 .venv/bin/python bench/automl/run.py --quick      # 3 sets, 10 s: a smoke test
    .venv/bin/python bench/automl/run.py --report bench/automl/results/<file>.json

First `bash bench/automl/setup_envs.sh` (one virtual environment per peer, plus one that builds
the data sets). Every (budget, set, system) runs on its own, one after another, as a subprocess
under that system's interpreter, with OMP_NUM_THREADS=1 (and the BLAS equivalents) and one
thread per model (see README.md). A run is killed after max(3 x budget, budget + 60 s), the
allowance covering interpreter start and imports at small budgets, and counts as a failure.
Results go to bench/automl/results/<date>[-quick].json after every run; tables print at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DATA = HERE / "data"
VENVS = HERE / ".venvs"
RESULTS = HERE / "results"
SYSTEMS = ["atelier", "flaml", "mljar", "autogluon", "lightgbm"]
QUICK_SETS = ["anes96", "penguins", "cars"]  # one per task, all with categorical + missing
OVERRUN = 1.10  # a run over budget x 1.1 is flagged
LOWER_IS_BETTER = {"log_loss", "rmse"}
THREADED = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
            "VECLIB_MAXIMUM_THREADS")  # fmt: skip
THREAD_ENV = dict.fromkeys(THREADED, "1")


def interpreter(system: str) -> Path:
    if system == "atelier":
        return ROOT / ".venv" / "bin" / "python"
    return VENVS / system / "bin" / "python"


def ensure_data() -> None:
    from_package = VENVS / "data" / "bin" / "python"
    if not from_package.exists():
        sys.exit("no data environment: run `bash bench/automl/setup_envs.sh` first")
    subprocess.run([str(from_package), str(HERE / "datasets.py")], check=True)


def run_one(system: str, name: str, budget: float) -> dict:
    timeout = max(3 * budget, budget + 60)
    workdir = Path(tempfile.mkdtemp(prefix=f"automl-{system}-"))
    env = os.environ | THREAD_ENV | {"TMPDIR": str(workdir), "PYTHONWARNINGS": "ignore"}
    cmd = [str(interpreter(system)), str(HERE / f"run_{system}.py"), str(DATA / name),
           "--budget", str(budget), "--workdir", str(workdir)]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the runner and any workers it started
        out, err = proc.communicate()
        timed_out = True
    elapsed = time.monotonic() - started
    shutil.rmtree(workdir, ignore_errors=True)
    result = None
    for line in reversed(out.splitlines()):
        if line.startswith("{"):
            try:
                result = json.loads(line)
                break
            except json.JSONDecodeError:
                continue
    if result is None:
        reason = f"timeout after {timeout:.0f} s" if timed_out else f"exit {proc.returncode}"
        result = {"system": system, "set": name, "budget": budget, "metrics": None,
                  "wall_seconds": None, "error": reason, "stderr": err[-2000:]}  # fmt: skip
    result["process_seconds"] = round(elapsed, 3)
    result["timed_out"] = timed_out
    return result


def ok(r: dict | None) -> bool:
    return bool(r and not r.get("error") and r.get("metrics"))


def ranks(values: dict[str, float | None], lower: bool) -> dict[str, float]:
    """1 = best; ties share the average rank; failures (None) share the last places."""
    good = sorted((v if lower else -v, s) for s, v in values.items() if v is not None)
    out: dict[str, float] = {}
    i = 0
    while i < len(good):
        j = i
        while j + 1 < len(good) and good[j + 1][0] == good[i][0]:
            j += 1
        for k in range(i, j + 1):
            out[good[k][1]] = (i + j) / 2 + 1
        i = j + 1
    failed = [s for s, v in values.items() if v is None]
    for s in failed:
        out[s] = len(good) + (len(failed) + 1) / 2
    return out


def tables(doc: dict) -> str:
    runs, metas = doc["runs"], doc["sets"]
    systems = [s for s in SYSTEMS if any(r["system"] == s for r in runs)]
    lines: list[str] = []
    for budget in doc["budgets"]:
        by = {(r["set"], r["system"]): r for r in runs if r["budget"] == budget}
        names = [n for n in metas if any((n, s) in by for s in systems)]
        if not names:
            continue
        lines += [f"### Budget {budget:g} s", "",
                  "Primary metric on the test split (wall seconds for fit + predict; "
                  f"! = over budget + {OVERRUN - 1:.0%}; LightGBM has no budget).", "",
                  "| set | task | metric | " + " | ".join(systems) + " |",
                  "|---|---|---|" + "---|" * len(systems)]  # fmt: skip
        total = dict.fromkeys(systems, 0.0)
        for name in names:
            meta = metas[name]
            key = meta["metric"]
            cells = []
            values = {}
            for s in systems:
                r = by.get((name, s))
                if not ok(r):
                    values[s] = None
                    cells.append("fail" + (f" ({r['error'][:40]})" if r else " (not run)"))
                    continue
                values[s] = r["metrics"][key]
                over = s != "lightgbm" and r["wall_seconds"] > budget * OVERRUN
                cells.append(f"{values[s]:.4f} ({r['wall_seconds']:.1f}{' !' if over else ''})")
            for s, rank in ranks(values, key in LOWER_IS_BETTER).items():
                total[s] += rank
            lines.append(f"| {name} | {meta['task']} | {key} | " + " | ".join(cells) + " |")
        lines += ["", "| mean rank (1 = best) | " + " | ".join(systems) + " |",
                  "|---|" + "---|" * len(systems),
                  "| " + f"{budget:g} s | " + " | ".join(f"{total[s] / len(names):.2f}"
                                                    for s in systems) + " |", ""]  # fmt: skip
        lines += [
            "Secondary metrics (balanced accuracy / R²):",
            "",
            "| set | " + " | ".join(systems) + " |",
            "|---|" + "---|" * len(systems),
        ]
        for name in names:
            key = "r2" if metas[name]["task"] == "regression" else "balanced_accuracy"
            cells = [f"{by[(name, s)]['metrics'][key]:.4f}" if ok(by.get((name, s))) else "fail"
                     for s in systems]  # fmt: skip
            lines.append(f"| {name} ({key}) | " + " | ".join(cells) + " |")
        lines.append("")
        if "atelier" in systems and "flaml" in systems:
            lines += ["Atelier against FLAML (relative, + = Atelier better):", "",
                      "| set | metric | atelier | flaml | difference | > 1 % worse |",
                      "|---|---|---|---|---|---|"]  # fmt: skip
            for name in names:
                a, f = by.get((name, "atelier")), by.get((name, "flaml"))
                key = metas[name]["metric"]
                if not (ok(a) and ok(f)):
                    lines.append(f"| {name} | {key} | - | - | - | {'yes' if not ok(a) else '-'} |")
                    continue
                va, vf = a["metrics"][key], f["metrics"][key]
                gain = (vf - va) / abs(vf) if key in LOWER_IS_BETTER else (va - vf) / abs(vf)
                lines.append(f"| {name} | {key} | {va:.4f} | {vf:.4f} | {gain:+.2%} | "
                             f"{'YES' if gain < -0.01 else 'no'} |")  # fmt: skip
            lines.append("")
        lines += ["Budget adherence (fit + predict wall seconds / budget):", "",
                  "| system | max | mean | runs over budget + 10 % | failures |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for s in systems:
            if s == "lightgbm":
                continue
            mine = [by[(n, s)] for n in names if (n, s) in by]
            walls = [r["wall_seconds"] / budget for r in mine if ok(r)]
            over = sum(w > OVERRUN for w in walls)
            fails = sum(not ok(r) for r in mine)
            if walls:
                lines.append(f"| {s} | {max(walls):.2f} | {sum(walls) / len(walls):.2f} | "
                             f"{over} / {len(mine)} | {fails} |")  # fmt: skip
            else:
                lines.append(f"| {s} | - | - | - | {fails} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[30.0, 60.0])
    parser.add_argument("--sets", nargs="+", default=None)
    parser.add_argument("--systems", nargs="+", default=SYSTEMS, choices=SYSTEMS)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SETS} at 10 s")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--report", type=Path, default=None, help="print tables of a result file")
    args = parser.parse_args()
    if args.report:
        print(tables(json.loads(args.report.read_text())))
        return
    for s in args.systems:
        if not interpreter(s).exists():
            sys.exit(f"no interpreter for {s} ({interpreter(s)}): run setup_envs.sh")
    ensure_data()
    metas = {p.parent.name: json.loads(p.read_text()) for p in sorted(DATA.glob("*/meta.json"))}
    names = args.sets or (QUICK_SETS if args.quick else list(metas))
    unknown = [n for n in names if n not in metas]
    if unknown:
        sys.exit(f"unknown sets: {unknown}; have {list(metas)}")
    budgets = [10.0] if args.quick else args.budgets
    stamp = dt.datetime.now(dt.UTC)
    out = args.out or RESULTS / f"{stamp:%Y-%m-%d}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"started": stamp.isoformat(timespec="seconds"), "budgets": budgets,
           "systems": args.systems, "thread_env": THREAD_ENV, "cpu_count": os.cpu_count(),
           "load_average_at_start": os.getloadavg(),
           "sets": {n: metas[n] for n in names}, "runs": []}  # fmt: skip
    for budget in budgets:
        for name in names:
            for system in args.systems:
                r = run_one(system, name, budget)
                doc["runs"].append(r)
                out.write_text(json.dumps(doc, indent=1) + "\n")
                primary = metas[name]["metric"]
                shown = f"{r['metrics'][primary]:.4f}" if ok(r) else f"FAIL {r['error']}"
                wall = r.get("wall_seconds")
                print(f"[{budget:g} s] {name:16} {system:10} {primary} {shown} "
                      f"wall {wall if wall is not None else '-'} s "
                      f"(process {r['process_seconds']:.1f} s)", flush=True)  # fmt: skip
    doc["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"\nresults: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}\n")
    print(tables(doc))


if __name__ == "__main__":
    main()
