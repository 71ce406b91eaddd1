"""Search benchmark: {random, tpe, nsga2} x {no stopping, accuracy-only ASHA, the pareto
scheduler} on digits, every arm at the same compute (``search.epoch_budget`` student-epochs).

    python scripts/bench_search.py            # 27 studies, ~40 min on a 2-core CPU
    python scripts/bench_search.py --quick    # 9 small studies, a smoke run (~3 min)

Each study is the default digits study (``search_spaces/digits.yaml``) with two objectives,
validation accuracy and params: both are exact, so fronts do not move with the machine's
load as measured latency would. The study stops when its epoch budget is spent (trials cut
by it count, like trials stopped early). Every study of one seed uses the same sampler
seed; seeds differ between repeats.

Hypervolume: of the front of the completed trials, in a fixed box: error (1 - accuracy)
from 0 to 0.2 and log10(params) from 3 (1,000 params) to log10 of the teacher's params;
the reference point is (error 0.2, the teacher's size), and the figure is divided by the
box's area, so 1.0 would be a perfect student of 1,000 params. The box is tighter than the
study's own (error 1, twice the teacher), where every digits front scores above 0.9.

Reported per arm: final hypervolume (mean and std over seeds); the student-epochs needed
to reach 95% of the best final hypervolume of any run; the hypervolume after a third of
the budget. Targets: tpe + pareto reaches the final hypervolume of random search without
stopping with at most 1/3 of the compute; pareto's hypervolume >= ASHA's. Writes
``results/benchmarks/search.json`` and ``search.png`` (hypervolume vs compute) and prints
the README table. Finished studies are kept under ``--workdir``: running the same command
again after an interruption skips them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from _bench import OUT_DIR, ROOT, machine, mean_std, write  # noqa: E402

SAMPLERS = ("random", "tpe", "nsga2")
PRUNERS = ("none", "asha", "pareto")
ERROR_REF = 0.2
LOG_PARAMS_MIN = 3.0


def hypervolume(points: list[tuple[float, float]], teacher_params: float) -> float:
    """Normalised hypervolume of (accuracy, params) points in the benchmark's box."""
    from autodistill.pareto import hypervolume as hv

    log_ref = math.log10(teacher_params)
    pts = [(1.0 - acc, max(math.log10(p), LOG_PARAMS_MIN)) for acc, p in points if 1.0 - acc < ERROR_REF and math.log10(p) < log_ref]
    if not pts:
        return 0.0
    return hv(np.array(pts), [ERROR_REF, log_ref]) / (ERROR_REF * (log_ref - LOG_PARAMS_MIN))


def hv_curve(trials, teacher_params: float) -> list[tuple[int, float]]:
    """(student-epochs spent, hypervolume) after each completed trial, in completion order."""
    done = trials[trials["state"] == "COMPLETE"].sort_values("study_epochs")
    curve, points = [], []
    for _, row in done.iterrows():
        points.append((float(row["accuracy"]), float(row["params"])))
        curve.append((int(row["study_epochs"]), hypervolume(points, teacher_params)))
    return curve


def hv_at(curve: list[tuple[int, float]], epochs: float) -> float:
    """Hypervolume once ``epochs`` student-epochs were spent (a step function)."""
    value = 0.0
    for spent, hv in curve:
        if spent > epochs:
            break
        value = hv
    return value


def epochs_to_reach(curve: list[tuple[int, float]], target: float) -> int | None:
    return next((spent for spent, hv in curve if hv >= target - 1e-12), None)


def study_config(args, workdir: Path, sampler: str, pruner: str, seed: int):
    from autodistill.loading import load_config

    overrides = {
        "name": f"{sampler}-{pruner}-s{seed}",
        "objectives": {"accuracy": "max", "params": "min"},
        "search.sampler": sampler,
        "search.pruner": pruner,
        "search.seed": seed,
        "search.trials": args.budget,  # the budget ends every study first
        "search.epoch_budget": args.budget,
        "search.time_budget_s": None,
        "search.max_concurrent": 2,
        "train.epochs": args.epochs,
        "latency.repeats": 5,  # not an objective here: time only what the table shows
        "latency.final_repeats": 10,
        "execution.results": str(workdir),
    }
    if args.quick:
        overrides["teacher.train.epochs"] = 10
        overrides["search.early_stopping"] = {"grace_period": 1, "reduction_factor": 2, "min_trials_per_rung": 2}
    return load_config(ROOT / "search_spaces" / "digits.yaml", overrides)


def run_one(args, workdir: Path, sampler: str, pruner: str, seed: int, settings: dict) -> dict:
    """One study; its record is kept in ``workdir/runs`` so a re-run skips it."""
    from autodistill.tune.runner import run_study

    config = study_config(args, workdir, sampler, pruner, seed)
    record_path = workdir / "runs" / f"{config.name}.json"
    if record_path.exists():
        record = json.loads(record_path.read_text())
        if record["settings"] == settings:
            return record
    shutil.rmtree(workdir / config.name, ignore_errors=True)  # an interrupted earlier attempt
    log_path = workdir / "logs" / f"{config.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(log_path, "w") as log, contextlib.redirect_stdout(log):
        result = run_study(config, log=lambda m: print(m, file=log, flush=True))
    teacher_params = float(result.summary["teacher"]["metrics"]["params"])
    trials = result.trials
    curve = hv_curve(trials, teacher_params)
    record = {
        "settings": settings,
        "sampler": sampler,
        "pruner": pruner,
        "seed": seed,
        "epochs_spent": int(result.summary["epochs_spent"]),
        "trials": {state: int((trials["state"] == state).sum()) for state in ("COMPLETE", "PRUNED", "FAIL")},
        "teacher_params": teacher_params,
        "final_hypervolume": curve[-1][1] if curve else 0.0,
        "curve": curve,
        "wall_s": time.perf_counter() - started,
    }
    record_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = record_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(record_path)
    return record


def summarise(runs: list[dict], budget: int) -> dict:
    best = max(r["final_hypervolume"] for r in runs)
    arms: dict[str, dict] = {}
    for sampler in SAMPLERS:
        for pruner in PRUNERS:
            mine = [r for r in runs if r["sampler"] == sampler and r["pruner"] == pruner]
            if not mine:
                continue
            reach = [epochs_to_reach(r["curve"], 0.95 * best) for r in mine]
            reached = [e for e in reach if e is not None]
            arms[f"{sampler}+{pruner}"] = {
                "sampler": sampler,
                "pruner": pruner,
                "final_hypervolume": mean_std([r["final_hypervolume"] for r in mine]),
                "hypervolume_at_third": mean_std([hv_at(r["curve"], budget / 3) for r in mine]),
                "epochs_to_95pct_best": {
                    "median": statistics.median(reached) if len(reached) == len(mine) else None,
                    "values": reach,
                    "reached": len(reached),
                    "n": len(mine),
                },
                "trials": {k: statistics.fmean(r["trials"][k] for r in mine) for k in ("COMPLETE", "PRUNED")},
                "wall_s": statistics.fmean(r["wall_s"] for r in mine),
            }
    targets = {}
    if "random+none" in arms and "tpe+pareto" in arms:
        goal = arms["random+none"]["final_hypervolume"]["mean"]
        needed = [epochs_to_reach(r["curve"], goal) for r in runs if r["sampler"] == "tpe" and r["pruner"] == "pareto"]
        fractions = [None if e is None else e / budget for e in needed]
        targets["tpe+pareto reaches random+none's final hypervolume with <= 1/3 of the compute"] = {
            "random+none final hypervolume (mean)": goal,
            "tpe+pareto fraction of the budget needed, per seed": fractions,
            "met": all(f is not None and f <= 1 / 3 for f in fractions),
            "met_by_mean_curve": arms["tpe+pareto"]["hypervolume_at_third"]["mean"] >= goal,
        }
    for sampler in SAMPLERS:
        a, p = arms.get(f"{sampler}+asha"), arms.get(f"{sampler}+pareto")
        if a and p:
            targets[f"{sampler}: pareto hypervolume >= asha"] = {
                "pareto": p["final_hypervolume"]["mean"],
                "asha": a["final_hypervolume"]["mean"],
                "met": p["final_hypervolume"]["mean"] >= a["final_hypervolume"]["mean"],
            }
    return {"best_final_hypervolume": best, "arms": arms, "targets": targets}


def plot(runs: list[dict], budget: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(0, budget, 61)
    fig, axes = plt.subplots(1, len(SAMPLERS), figsize=(5 * len(SAMPLERS), 4), sharey=True)
    styles = {"none": ("tab:gray", "-"), "asha": ("tab:blue", "--"), "pareto": ("tab:red", "-")}
    for ax, sampler in zip(np.atleast_1d(axes), SAMPLERS):
        for pruner in PRUNERS:
            mine = [r for r in runs if r["sampler"] == sampler and r["pruner"] == pruner]
            if not mine:
                continue
            values = np.array([[hv_at(r["curve"], x) for x in grid] for r in mine])
            color, style = styles[pruner]
            ax.plot(grid, values.mean(0), color=color, linestyle=style, label=pruner)
            ax.fill_between(grid, values.min(0), values.max(0), color=color, alpha=0.12)
        ax.axvline(budget / 3, color="black", linewidth=0.5, linestyle=":")
        ax.set_title(sampler)
        ax.set_xlabel("student-epochs spent")
    np.atleast_1d(axes)[0].set_ylabel("normalised hypervolume (mean, min-max over seeds)")
    np.atleast_1d(axes)[0].legend(title="search.pruner")
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def table(payload: dict) -> str:
    rows = [
        "| sampler | search.pruner | final hypervolume | hypervolume at 1/3 of the budget | student-epochs to 95% of the best run (median of the seeds that got there) | trials complete / stopped |",
        "|---|---|---|---|---|---|",
    ]
    for arm in payload["summary"]["arms"].values():
        hv, third, reach = arm["final_hypervolume"], arm["hypervolume_at_third"], arm["epochs_to_95pct_best"]
        reached = sorted(v for v in reach["values"] if v is not None)
        reach_text = f"{statistics.median(reached):.0f} ({reach['reached']}/{reach['n']} seeds)" if reached else f"never (0/{reach['n']} seeds)"
        rows.append(
            f"| {arm['sampler']} | {arm['pruner']} | {hv['mean']:.4f} ± {hv['std']:.4f} | {third['mean']:.4f} ± {third['std']:.4f} | "
            f"{reach_text} | {arm['trials']['COMPLETE']:.1f} / {arm['trials']['PRUNED']:.1f} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=360, help="student-epochs per study (24 full trials of 15 epochs)")
    parser.add_argument("--epochs", type=int, default=15, help="train.epochs of a trial")
    parser.add_argument("--workdir", type=Path, default=ROOT / "results" / "bench_search", help="where the studies are kept")
    parser.add_argument("--quick", action="store_true", help="1 seed, 4-epoch trials, a 24-epoch budget: a smoke run")
    parser.add_argument("--report", action="store_true", help="print the table and redraw the plot from results/benchmarks/search.json; run nothing")
    args = parser.parse_args()
    if args.report:
        payload = json.loads((OUT_DIR / "search.json").read_text())
        plot(payload["runs"], payload["budget_student_epochs"], OUT_DIR / "search.png")
        print(table(payload))
        report_targets(payload)
        return
    if args.quick:
        args.seeds, args.budget, args.epochs = 1, 24, 4
        args.workdir = args.workdir.with_name(args.workdir.name + "_quick")
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}")
    print(f"{len(SAMPLERS) * len(PRUNERS)} arms x {args.seeds} seeds, {args.budget} student-epochs each; studies in {args.workdir}", flush=True)
    settings = {"budget": args.budget, "epochs": args.epochs, "quick": args.quick}
    runs = []
    started = time.time()
    for seed in range(args.seeds):  # seeds outermost: an interrupted run leaves every arm with the same seeds done
        for sampler in SAMPLERS:
            for pruner in PRUNERS:
                r = run_one(args, args.workdir, sampler, pruner, seed, settings)
                runs.append(r)
                print(
                    f"  seed {seed} {sampler:>6}+{pruner:<6} hypervolume {r['final_hypervolume']:.4f}  complete {r['trials']['COMPLETE']:>3}  "
                    f"stopped {r['trials']['PRUNED']:>3}  failed {r['trials']['FAIL']}  epochs {r['epochs_spent']}  "
                    f"({r['wall_s']:.0f} s; {time.time() - started:.0f} s so far)",
                    flush=True,
                )
    failed = sum(r["trials"]["FAIL"] for r in runs)
    payload = {
        "machine": info,
        "dataset": "digits (8x8, 1 channel), search_spaces/digits.yaml",
        "objectives": {"accuracy": "max", "params": "min"},
        "budget_student_epochs": args.budget,
        "trial_epochs": args.epochs,
        "seeds": args.seeds,
        "hypervolume": f"error in [0, {ERROR_REF}] x log10(params) in [{LOG_PARAMS_MIN:.0f}, log10(teacher params)], divided by the box's area",
        "failed_trials": failed,
        "summary": summarise(runs, args.budget),
        "runs": runs,
    }
    name = "search_quick" if args.quick else "search"
    path = write(name, payload)
    plot(runs, args.budget, OUT_DIR / f"{name}.png")
    print(f"\nwrote {path} and {OUT_DIR / (name + '.png')}\n")
    print(table(payload))
    report_targets(payload)


def report_targets(payload: dict) -> None:
    print()
    for target, result in payload["summary"]["targets"].items():
        print(f"{'met' if result['met'] else 'MISSED'}: {target}: {json.dumps({k: v for k, v in result.items() if k != 'met'})}")


if __name__ == "__main__":
    main()
