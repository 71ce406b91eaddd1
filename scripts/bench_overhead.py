"""What a study costs besides its training: the default study run by autodistill, side by side
with the plain Optuna loop a user could write around the same trial function.

    python scripts/bench_overhead.py             # 3 rounds, ~15 min on a 2-core CPU
    python scripts/bench_overhead.py --quick     # 1 round of 6 trials x 5 epochs (~2 min)

Three ways to run ``search_spaces/digits.yaml`` (same sampler, seed, trial count and
student-epochs; the teacher trained and cached beforehand, so each run only loads it):

(a) ``autodistill search`` (Ray Tune, ``search.max_concurrent`` trials at once, one torch
    thread each), the whole command: start-up, search, report, re-measured front;
(b) a plain Optuna loop in one process (``study.optimize(objective, n_trials)``), one trial at
    a time, torch using every core;
(c) the same loop with ``n_jobs`` = the cores (Optuna's threads), one torch thread each.

(b) and (c) run this file with ``--plain``: it imports autodistill's task API only, builds the
same TPE sampler the CLI builds, and calls the trial function the Ray trainable calls
(``Task.start_trial`` -> ``TrialRun.train`` -> ``TrialRun.finish``, which measures latency).
Each mode is a subprocess timed from its command to its exit; rounds interleave the modes.
``--before DIR`` (a checkout of an older commit) adds (a) at that code to every round, so that
a change is measured against the code before it under the same load.

Reported per mode: wall time, time from the command to the first trial's first training step,
the CPU time spent before that step (by the same groups as below) and the least wall time the
machine's cores need for it (CPU time / cores: a first step sooner than that needs less work
before it, not less waiting), and the share of slot time (run time x parallel slots) spent
inside training steps; the CPU time of the command and of every process it started (each
command runs in a session of its own, read from /proc every 0.2 s), split into the driver,
the trial workers (``ray::`` worker processes) and Ray's own processes (GCS, raylet, agents,
monitors); for (a), each trial's
time from Optuna's ask to its tell outside the trial function (the driver's and Ray's share:
sampling, hand-over, result, checkpoint copy, storage writes; the first trial of each slot,
which also waits for its worker, left out); and the ratios ours / (b) and ours / (c), taken
within each round. Median and range over rounds. Writes
``results/benchmarks/overhead.json`` and prints the README table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _bench import ROOT, machine, spread, write  # noqa: E402

STUDY = ROOT / "search_spaces" / "digits.yaml"
MODES = ("autodistill", "optuna loop", "optuna n_jobs")


def plain_sampler(config):
    """The TPE sampler a user writes for this study: what autodistill.tune.runner.make_sampler
    builds (main() checks that it still does), without importing Ray into the plain loop."""
    import optuna

    startup = min(10, max(4, config.search.trials // 3))
    return optuna.samplers.TPESampler(seed=config.search.seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=startup)


def _same_sampler(a, b) -> bool:
    keys = ("_n_startup_trials", "_multivariate", "_group", "_constant_liar", "_n_ei_candidates", "_consider_endpoints")
    return type(a) is type(b) and all(getattr(a, k, None) == getattr(b, k, None) for k in keys)


def plain_loop(study_file: Path, results: str, jobs: int, threads: int, out: Path) -> None:
    """The loop a user writes: one process, Optuna's own ``optimize``, the same trial function."""
    command_at = float(os.environ.get("BENCH_COMMAND_AT", time.time()))
    import optuna
    import torch

    from autodistill.loading import load_config
    from autodistill.space import resolve, sample, search_space
    from autodistill.tasks import get_task

    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    config = load_config(study_file, {"execution.results": results})
    task = get_task(config.task)
    data = task.load_data(config)
    teachers = task.prepare_teachers(config, data, log=lambda m: None)
    targets = task.teacher_targets(config, data, teachers, log=lambda m: None)
    space = search_space(config)
    objectives = list(config.objectives)
    sampler = plain_sampler(config)
    study = optuna.create_study(directions=[config.objectives[m] + "imize" for m in objectives], sampler=sampler)
    first_step: list[float] = []
    rows: list[dict] = []

    def objective(trial: optuna.Trial) -> list[float]:
        params = sample(trial, space)
        run = task.start_trial(resolve(config, params), config, data, targets, config.search.seed + trial.number)
        first_step.append(time.time())
        history = run.train(lambda stats: None, None, None)
        metrics = {**run.costs(), **history[-1].as_dict(), **run.finish(history).metrics}  # as the trainable reports them
        steps = sum(h.steps_s for h in history)
        rows.append({"number": trial.number, "params": params, "steps_s": steps, **{m: metrics[m] for m in objectives}})
        return [metrics[m] for m in objectives]

    began = time.perf_counter()
    study.optimize(objective, n_trials=config.search.trials, n_jobs=jobs)
    search_s = time.perf_counter() - began
    out.write_text(
        json.dumps(
            {
                "search_s": search_s,
                "slots": jobs,
                "first_step_s": min(first_step) - command_at,
                "steps_s": sum(r["steps_s"] for r in rows),
                "trials": sorted(rows, key=lambda r: r["number"]),
            }
        )
    )


RAY_AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")


class CpuMeter:
    """The CPU time (user + system) of a command and every process in its session, sampled
    from /proc: each process's last reading counts (up to one interval of its CPU may be
    missed when it exits). Grouped as the driver (the command's own process), the trial
    workers (Ray's worker processes: ``default_worker.py``, which renames itself ``ray::IDLE``,
    ``ray::ImplicitFunc.train``) and Ray's own processes (all the others), by the process's
    name (a process once named as a worker stays one). :meth:`before` gives the totals as
    they were at a moment of the run (the last sample before it)."""

    INTERVAL_S = 0.2
    GROUPS = ("driver", "trial workers", "ray")

    def __init__(self, proc: subprocess.Popen):
        self.sid, self.tick = proc.pid, os.sysconf("SC_CLK_TCK")
        self.seen: dict[tuple[int, int], tuple[str, float]] = {}  # (pid, start time) -> (group, CPU s)
        self.series: list[tuple[float, dict[str, float]]] = []  # (time.time(), CPU s by group) after each sample
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _group(self, pid: int) -> str:
        if pid == self.sid:
            return "driver"
        try:
            words = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            words = [""]
        worker = (words[0].startswith("ray::") and words[0] not in RAY_AGENTS) or any(w.endswith("default_worker.py") for w in words)
        return "trial workers" if worker else "ray"

    def _sample(self) -> None:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2 :].split()  # after the command name, which may hold spaces
            if int(fields[3]) != self.sid:  # session id
                continue
            key = (int(entry), int(fields[19]))
            # read each time: a Ray worker starts as `python .../default_worker.py` and renames itself
            # `ray::...`; once a worker, always one (an exiting process's name reads empty)
            before = self.seen.get(key, ("ray", 0.0))[0]
            group = before if before == "trial workers" else self._group(key[0])
            self.seen[key] = (group, (int(fields[11]) + int(fields[12])) / self.tick)

    def _run(self) -> None:
        while not self._done.wait(self.INTERVAL_S):
            self._sample()
            self.series.append((time.time(), self._totals()))

    def _totals(self) -> dict[str, float]:
        out = dict.fromkeys(self.GROUPS, 0.0)
        for group, cpu in self.seen.values():
            out[group] += cpu
        out["total"] = sum(out.values())
        return out

    def before(self, moment: float) -> dict[str, float]:
        """CPU time by group at the last sample taken before ``moment`` (a ``time.time()``):
        what the run had used by then, up to one interval short."""
        taken = [totals for at, totals in self.series if at <= moment]
        return taken[-1] if taken else {**dict.fromkeys(self.GROUPS, 0.0), "total": 0.0}  # nothing sampled yet

    def stop(self) -> dict[str, float]:
        self._done.set()
        self._thread.join()
        out = self._totals()
        # how many worker processes Ray started: 2 when Tune reuses its two trial actors throughout
        out["worker processes"] = float(sum(1 for group, _ in self.seen.values() if group == "trial workers"))
        return out


def _timed(command: list[str], env: dict | None, cwd: Path | None = None) -> tuple[subprocess.CompletedProcess, float, dict[str, float], CpuMeter]:
    """Run ``command`` in a session of its own: its result, its wall time, its CPU time by
    group, and the meter (for the CPU time up to a moment of the run)."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd, start_new_session=True)
    meter = CpuMeter(proc)
    out, err = proc.communicate()
    wall = time.perf_counter() - started
    return subprocess.CompletedProcess(command, proc.returncode, out, err), wall, meter.stop(), meter


def _before_first_step(meter: CpuMeter, first_step_at: float) -> dict[str, float]:
    """The CPU time the command and its processes used before the first training step, by
    group, and the least wall time the machine's cores need for it (``floor_s``): a first
    step sooner than that needs less work before it, not less waiting."""
    cpu = meter.before(first_step_at)
    return {**cpu, "floor_s": cpu["total"] / (os.cpu_count() or 1)}


def run_ours(study_file: Path, workdir: Path, name: str, slots: int, code: Path | None = None) -> dict:
    """``autodistill search``; with ``code``, the autodistill package of that checkout (an
    older commit, put first on PYTHONPATH) instead of the installed one."""
    import optuna
    import pandas as pd

    shutil.rmtree(workdir / name, ignore_errors=True)  # a run of an earlier invocation
    # no empty entry: Python reads one as the working directory, whose package would then be next in line
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(code), os.environ.get("PYTHONPATH")) if p)} if code else None
    command_at = time.time()
    # run in the work folder: `python -m` puts the working directory first on sys.path, and from
    # a checkout it would import that checkout's package ahead of ``code`` on PYTHONPATH
    proc, wall, cpu, meter = _timed(
        [sys.executable, "-m", "autodistill", "search", str(study_file), "--results", str(workdir), "--name", name], env, cwd=workdir
    )
    if proc.returncode != 0:
        raise SystemExit(f"autodistill search failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    results = workdir / name
    summary = json.loads((results / "study.json").read_text())
    trials = pd.read_csv(results / "trials.csv")
    stored = optuna.load_study(study_name=name, storage=f"sqlite:///{results / 'study.db'}").trials
    first = min(t.user_attrs["first_step_at"] for t in stored if "first_step_at" in t.user_attrs)
    steps = float(trials["steps_s"].sum())
    # from Optuna's ask to its tell, less the trial function's own time: the driver's and Ray's
    # share of each trial (sampling, hand-over, result, checkpoint copy, sqlite writes), with
    # the first trial of each slot left out (it also waits for its worker to start)
    later = sorted((t for t in stored if t.datetime_complete is not None and "trial_s" in t.user_attrs), key=lambda t: t.datetime_start)[slots:]
    outside = [(t.datetime_complete - t.datetime_start).total_seconds() - t.user_attrs["trial_s"] for t in later]
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "search_s": summary["search_s"],
        "first_step_s": first - command_at,
        "before_first_step": _before_first_step(meter, first),
        "steps_s": steps,
        "step_share": steps / (summary["search_s"] * slots),
        "outside_trial_s": sum(outside) / len(outside) if outside else float("nan"),
        "trials": [
            {
                "number": int(r["number"]),
                "params": {k[6:]: r[k] for k in trials.columns if k.startswith("param.") and pd.notna(r[k])},
                "accuracy": float(r["accuracy"]),
            }
            for _, r in trials.iterrows()
        ],
    }


def run_plain(study_file: Path, workdir: Path, jobs: int, threads: int) -> dict:
    out = workdir / f"plain-{jobs}-{time.time_ns()}.json"
    env = {**os.environ, "BENCH_COMMAND_AT": repr(time.time())}
    command = [
        sys.executable,
        __file__,
        "--plain",
        str(study_file),
        "--results",
        str(workdir),
        "--jobs",
        str(jobs),
        "--threads",
        str(threads),
        "--out",
        str(out),
    ]
    proc, wall, cpu, meter = _timed(command, env)
    if proc.returncode != 0:
        raise SystemExit(f"the plain Optuna loop failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    result = json.loads(out.read_text())
    result["wall_s"], result["cpu_s"] = wall, cpu
    result["before_first_step"] = _before_first_step(meter, float(env["BENCH_COMMAND_AT"]) + result["first_step_s"])
    result["step_share"] = result["steps_s"] / (result["search_s"] * jobs)
    return result


def _span(s: dict, fmt: str) -> str:
    """A spread as ``median (min–max)``."""
    return f"{s['median']:{fmt}} ({s['min']:{fmt}}–{s['max']:{fmt}})"


def table(payload: dict) -> str:
    rows = [
        "| mode | wall time (s) | command → first step (s) | slot time in training steps | CPU time (s): driver / trial workers / Ray's own | CPU busy | Ray worker processes |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in payload["modes"].values():
        cpu = " / ".join(f"{m['cpu_s'][g]['median']:.1f}" for g in CpuMeter.GROUPS)
        rows.append(
            f"| {m['label']} | {_span(m['wall_s'], '.1f')} | {_span(m['first_step_s'], '.1f')} | {m['step_share']['median']:.0%} | {cpu} | {m['cpu_busy']['median']:.0%} | {_span(m['worker_processes'], '.0f')} |"
        )
    rows += [
        "",
        f"| mode | command → first step (s) | CPU time before it (s): driver / trial workers / Ray's own | the least wall time that CPU time takes on {payload['machine']['cores']} cores (s) |",
        "|---|---|---|---|",
    ]
    for m in payload["modes"].values():
        before = m["before_first_step"]
        cpu = " / ".join(f"{before[g]['median']:.1f}" for g in CpuMeter.GROUPS)
        rows.append(f"| {m['label']} | {_span(m['first_step_s'], '.1f')} | {cpu} | {_span(before['floor_s'], '.1f')} |")
    r = payload["ratios"]
    rows += ["", f"ours ÷ (b) = {_span(r['ours / optuna loop'], '.2f')}, ours ÷ (c) = {_span(r['ours / optuna n_jobs'], '.2f')}"]
    if "ours / before" in r:
        rows[-1] += f", ours ÷ before = {_span(r['ours / before'], '.2f')}"
    outside = [f"{name} {_span(m['outside_trial_s'], '.3f')}" for name, m in payload["modes"].items() if "outside_trial_s" in m]
    if outside:
        rows.append(f"per trial, from Optuna's ask to its tell, outside the trial function (s): {'; '.join(outside)}")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one round of a 6-trial, 5-epoch copy of the study")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--label", default="", help="stored with the results (e.g. before/after a change)")
    parser.add_argument("--json", default="overhead", help="the results file: results/benchmarks/<JSON>.json")
    parser.add_argument(
        "--before",
        type=Path,
        default=None,
        help="a checkout of an older commit: its `autodistill search` runs in the same rounds, as mode 'autodistill before'",
    )
    parser.add_argument("--plain", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--results", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--jobs", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain:
        plain_loop(args.plain, args.results, args.jobs, args.threads, args.out)
        return
    import yaml

    from autodistill.data import load_dataset
    from autodistill.loading import load_config
    from autodistill.teacher import prepare_teacher

    cores = os.cpu_count() or 1
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-overhead-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    raw = yaml.safe_load(STUDY.read_text())
    if args.quick:
        raw["train"]["epochs"], raw["search"]["trials"], args.rounds = 5, 6, 1
    raw["search"]["time_budget_s"] = None  # the plain loops have none: every mode runs every trial
    study_file = workdir / "study.yaml"
    study_file.write_text(yaml.safe_dump(raw))
    config = load_config(study_file, {"execution.results": str(workdir)})
    from autodistill.tune.runner import make_sampler

    if not _same_sampler(plain_sampler(config), make_sampler(config)):
        raise SystemExit("the plain loop's sampler is no longer the one autodistill builds: update plain_sampler()")
    print(f"machine: {machine()}", flush=True)
    prepare_teacher(config, load_dataset(config.data), log=lambda m: None)  # cached: every run below loads it
    modes = MODES if args.before is None else (*MODES, "autodistill before")
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    for r in range(args.rounds):
        runs["autodistill"].append(run_ours(study_file, workdir, f"overhead-{r}", config.search.max_concurrent))
        if args.before is not None:
            runs["autodistill before"].append(run_ours(study_file, workdir, f"before-{r}", config.search.max_concurrent, args.before.resolve()))
        runs["optuna loop"].append(run_plain(study_file, workdir, 1, cores))
        runs["optuna n_jobs"].append(run_plain(study_file, workdir, cores, 1))
        print(f"  round {r + 1}/{args.rounds}: " + ", ".join(f"{m} {runs[m][-1]['wall_s']:.1f} s" for m in modes), flush=True)
    labels = {
        "autodistill": f"(a) autodistill search ({config.search.max_concurrent} trials at once, 1 thread each)",
        "optuna loop": f"(b) plain Optuna loop, one trial at a time, {cores} torch threads",
        "optuna n_jobs": f"(c) plain Optuna, n_jobs={cores}, 1 torch thread each",
        "autodistill before": f"(a) at the older checkout {args.before}, in the same rounds",
    }
    payload = {
        "label": args.label,
        "machine": machine(),
        "study": {"file": "search_spaces/digits.yaml", "trials": config.search.trials, "epochs": config.train.epochs, "quick": args.quick},
        "modes": {
            m: {
                "label": labels[m],
                **{k: spread([run[k] for run in runs[m]]) for k in ("wall_s", "first_step_s", "step_share", "search_s")},
                "cpu_s": {g: spread([run["cpu_s"][g] for run in runs[m]]) for g in (*CpuMeter.GROUPS, "total")},
                "before_first_step": {g: spread([run["before_first_step"][g] for run in runs[m]]) for g in (*CpuMeter.GROUPS, "total", "floor_s")},
                # the CPU time over what the machine's cores could give in the wall time: near 100%, the run is CPU-bound
                "cpu_busy": spread([run["cpu_s"]["total"] / (run["wall_s"] * cores) for run in runs[m]]),
                "worker_processes": spread([run["cpu_s"]["worker processes"] for run in runs[m]]),
                **({"outside_trial_s": spread([run["outside_trial_s"] for run in runs[m]])} if "outside_trial_s" in runs[m][0] else {}),
            }
            for m in modes
        },
        "ratios": {
            "ours / optuna loop": spread([a["wall_s"] / b["wall_s"] for a, b in zip(runs["autodistill"], runs["optuna loop"])]),
            "ours / optuna n_jobs": spread([a["wall_s"] / c["wall_s"] for a, c in zip(runs["autodistill"], runs["optuna n_jobs"])]),
            **(
                {"ours / before": spread([a["wall_s"] / b["wall_s"] for a, b in zip(runs["autodistill"], runs["autodistill before"])])}
                if args.before is not None
                else {}
            ),
        },
        "runs": runs,
    }
    print(table(payload))
    print(f"wrote {write(args.json if not args.quick else f'{args.json}_quick', payload)}")


if __name__ == "__main__":
    main()
