"""Search benchmark: autodistill's searches against the strongest peers, every arm at the same
compute (student-epochs), on two problems, several seeds.

    python scripts/bench_search.py                          # both problems, 5 seeds (~3.5 h on a 2-core CPU)
    python scripts/bench_search.py --problems digits --seeds 3
    python scripts/bench_search.py --quick                  # 1 seed, tiny budgets: a smoke run (~6 min)
    python scripts/bench_search.py --arms tpe+pareto+startup4 --keep   # one new arm; the rest from search.json
    python scripts/bench_search.py --report                 # table and plot from results/benchmarks/search.json

Problems:
- ``digits``: the default study (``search_spaces/digits.yaml``, 15-epoch trials) with two
  exact objectives, validation accuracy and params.
- ``shapes``: 32x32 RGB images of ten kinds of shape and texture (disk, square, triangle,
  plus, ring, cross, horizontal / vertical / diagonal stripes, checkerboard) at random places,
  sizes and colours, with noise and a distractor blob, written by this script in CIFAR-10's
  own file format and read through ``dataset: cifar10``; objectives validation accuracy and
  **measured latency** (batch 1, one thread), 5-epoch trials; 1,000 training images (800
  train, 200 validation), 500 test.

Arms (``--arms``), each driving the same trial training function:
- ``random`` / ``tpe+pareto`` / ``tpe+pareto+prescreen`` / ``tpe+pareto+spread`` /
  ``tpe+pareto+startup4`` / ``tpe+pareto+spread4`` / ``tpe+pareto+students`` /
  ``tpe+pareto+students3`` / ``+students4`` / ``+students6`` / ``gp``:
  ``autodistill`` studies
  (Ray Tune, 2 trials at once) with ``search.sampler`` random, tpe or gp (Optuna's
  GPSampler: LogEHVI for several objectives) and ``search.pruner`` none or pareto;
  ``+prescreen``: ``search.prescreen`` (flash distillation of 24 random students for 2
  epochs, the best 8 tried first; its epochs count in the budget); ``+spread``:
  ``search.startup: spread`` (the start-up trials spread over the cost, trains nothing);
  ``+startup4``: ``search.startup_trials: 4`` (TPE models the results after 4 trials, not
  a third of those the budget holds: 8 here); ``+spread4``: both; ``+students``:
  ``search.startup: spread_students`` (the same students as spread, each with the middle
  recipe), 8 start-up trials; ``+studentsN``: the same with N.
- ``moasha``: Syne Tune's MOASHA (its own asynchronous multi-objective successive halving,
  random proposals, non-dominated sorting at each rung), through Syne Tune's own
  ``LocalBackend`` (a process per trial, 2 at once) with the rungs of ours (grace 2, eta 3).
- ``optunahub``: a plain Optuna loop (``optimize(n_jobs=2)``, the TPE sampler of ours)
  with OptunaHub's ``pruners/multi_metric_pruner`` (the Pareto rank of each trial among
  those at the same epoch, handed to Optuna's ``MedianPruner`` as in the package's example,
  from epoch 2 on, after 3 trials; its ``SuccessiveHalvingPruner`` cannot be wrapped). The package is loaded from a
  checkout of ``optuna/optunahub-registry`` (``--optunahub-registry``; the hub itself needs
  the network); without one the arm is skipped with that reason.

Every study stops when its budget of student-epochs is spent (trials cut by it count, like
trials stopped early, and so does the pre-screen). Hypervolume: of the front of the trials
that completed, in a fixed box per problem: error (1 - accuracy) from 0 to ``error_ref`` and
log10 of the cost from ``log_min`` to log10 of the teacher's cost; divided by the box's area.
Reported per arm: final hypervolume (mean ± std over seeds); hypervolume at 1/4 of the
budget; the student-epochs each seed needed to reach random search's final hypervolume.
Targets: the best configuration of ours reaches random's final hypervolume with at most 1/4
of the compute on every seed, and ends at or above every peer's final hypervolume.

Finished studies are kept under ``--workdir`` (``results/bench_search``): the same command
again after an interruption skips them. With ``--keep`` the studies that
``results/benchmarks/search.json`` holds (same budget and trial length) are taken from it
rather than run again, and their arms stay in the tables: a new arm costs its own studies.
Writes ``results/benchmarks/search.json`` and ``search.png``, and prints the README tables.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import pickle
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from _bench import OUT_DIR, ROOT, machine, mean_std, write  # noqa: E402

OURS = {
    "random": {"search.sampler": "random", "search.pruner": "none"},
    "tpe+pareto": {"search.sampler": "tpe", "search.pruner": "pareto"},
    "tpe+pareto+prescreen": {"search.sampler": "tpe", "search.pruner": "pareto", "search.prescreen": {"candidates": 24, "epochs": 2, "keep": 8}},
    "tpe+pareto+spread": {"search.sampler": "tpe", "search.pruner": "pareto", "search.startup": "spread"},
    "tpe+pareto+startup4": {"search.sampler": "tpe", "search.pruner": "pareto", "search.startup_trials": 4},
    "tpe+pareto+spread4": {"search.sampler": "tpe", "search.pruner": "pareto", "search.startup": "spread", "search.startup_trials": 4},
    "tpe+pareto+students": {"search.sampler": "tpe", "search.pruner": "pareto", "search.startup": "spread_students"},
    **{
        f"tpe+pareto+students{n}": {"search.sampler": "tpe", "search.pruner": "pareto", "search.startup": "spread_students", "search.startup_trials": n}
        for n in (3, 4, 6)
    },
    "gp": {"search.sampler": "gp", "search.pruner": "none"},
    "tpe": {"search.sampler": "tpe", "search.pruner": "none"},
    "tpe+asha": {"search.sampler": "tpe", "search.pruner": "asha"},
}
PEERS = ("gp", "moasha", "optunahub")
DEFAULT_ARMS = (
    "random",
    "tpe+pareto",
    "tpe+pareto+prescreen",
    "tpe+pareto+spread",
    "tpe+pareto+startup4",
    "tpe+pareto+spread4",
    "tpe+pareto+students",
    "tpe+pareto+students3",
    "tpe+pareto+students4",
    "tpe+pareto+students6",
    "gp",
    "moasha",
    "optunahub",
)
BASELINE = "random"
GRACE, ETA = 2, 3.0

PROBLEMS = {
    "digits": {"cost": "params", "error_ref": 0.2, "log_min": 3.0, "epochs": 15, "budget": 360, "what": "digits 8x8x1, accuracy + params"},
    "shapes": {"cost": "latency_ms", "error_ref": 0.7, "log_min": math.log10(0.02), "epochs": 5, "budget": 120, "what": "shapes 32x32x3, accuracy + latency"},
}

SHAPES_YAML = """\
# written by scripts/bench_search.py: synthetic 32x32 RGB shapes in CIFAR-10's file format
name: shapes
data: {{dataset: cifar10, root: {root}, val_fraction: 0.2}}
teacher:
  arch: {{family: resnet, widths: [32, 64, 128], depths: [1, 1, 1]}}
  train: {{epochs: 15, lr: 0.003, batch_size: 128}}
student:
  family: {{choice: [cnn, resnet]}}
  cnn:
    widths: [16, 32, 64]
    depths: [{{low: 1, high: 2}}, {{low: 1, high: 2}}, 1]
    width_mult: {{low: 0.25, high: 1.0, step: 0.125}}
  resnet:
    widths: [16, 32, 64]
    depths: [1, 1, 1]
    width_mult: {{low: 0.25, high: 1.0, step: 0.125}}
distill:
  alpha: {{low: 0.1, high: 0.95}}
  temperature:
    schedule: {{choice: [constant, linear, cosine]}}
    start: {{low: 1.0, high: 8.0}}
    end: 1.0
train: {{epochs: 5, lr: {{low: 1e-3, high: 2e-2, log: true}}, batch_size: 64, optimizer: adamw}}
objectives: {{accuracy: max, latency_ms: min}}
search: {{sampler: tpe, trials: 24, max_concurrent: 2, seed: 0}}
latency: {{device: cpu, batch_size: 1, threads: 1, warmup: 10, repeats: 30, final_repeats: 100}}
"""


# -- the shapes data ------------------------------------------------------------------------


def shapes(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (n, 32, 32, 3) uint8 and their labels: one shape or texture patch per image."""
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
    images = np.empty((n, 32, 32, 3), np.uint8)
    labels = rng.integers(0, 10, n)
    for i, label in enumerate(labels):
        cx, cy, r = rng.uniform(12, 20), rng.uniform(12, 20), rng.uniform(7.0, 11.0)
        a = rng.uniform(-0.3, 0.3)
        u = (xx - cx) * math.cos(a) + (yy - cy) * math.sin(a)
        v = -(xx - cx) * math.sin(a) + (yy - cy) * math.cos(a)
        box = (np.abs(u) < r) & (np.abs(v) < r)
        period = rng.uniform(4.0, 6.0)
        mask = {
            0: u**2 + v**2 < r**2,
            1: box,
            2: (v > -r) & (v < r) & (np.abs(u) < (v + r) / 2),
            3: box & ((np.abs(u) < r / 3) | (np.abs(v) < r / 3)),
            4: (u**2 + v**2 < r**2) & (u**2 + v**2 > (0.55 * r) ** 2),
            5: box & ((np.abs(u - v) < r / 3) | (np.abs(u + v) < r / 3)),
            6: box & (np.mod(v, period) < period / 2),
            7: box & (np.mod(u, period) < period / 2),
            8: box & (np.mod(u + v, period * 1.4) < period * 0.7),
            9: box & ((np.mod(u, period) < period / 2) ^ (np.mod(v, period) < period / 2)),
        }[int(label)]
        bg = rng.uniform(0.1, 0.9, 3)
        fg = np.clip(bg + rng.choice([-1, 1], 3) * rng.uniform(0.2, 0.45, 3), 0, 1)
        img = np.where(mask[..., None], fg, bg)
        bx, by, br = rng.uniform(0, 32), rng.uniform(0, 32), rng.uniform(1.5, 3.5)  # a distractor blob
        blob = (xx - bx) ** 2 + (yy - by) ** 2 < br**2
        img = np.where(blob[..., None], rng.uniform(0, 1, 3), img)
        img = img + rng.normal(0, 0.06, img.shape)
        images[i] = np.clip(img * 255, 0, 255).astype(np.uint8)
    return images, labels


def write_shapes(root: Path, n_train: int = 1000, n_test: int = 500) -> None:
    """The shapes as CIFAR-10's pickle batches under ``root`` (once)."""
    base = root / "cifar-10-batches-py"
    if (base / "batches.meta").exists():
        return
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    per = n_train // 5
    for name, n in [*((f"data_batch_{i}", per) for i in range(1, 6)), ("test_batch", n_test)]:
        images, labels = shapes(n, rng)
        batch = {"data": images.transpose(0, 3, 1, 2).reshape(n, 3072), "labels": [int(v) for v in labels]}
        with open(base / name, "wb") as fh:
            pickle.dump(batch, fh)
    names = ["disk", "square", "triangle", "plus", "ring", "cross", "hstripes", "vstripes", "diagonal", "checker"]
    with open(base / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": names}, fh)


def study_file(problem: str, workdir: Path) -> Path:
    if problem == "digits":
        return ROOT / "search_spaces" / "digits.yaml"
    root = workdir / "shapes-data"
    write_shapes(root)
    path = workdir / "shapes.yaml"
    path.write_text(SHAPES_YAML.format(root=root))
    return path


def base_overrides(args, problem: str, workdir: Path, seed: int) -> dict:
    spec = PROBLEMS[problem]
    out = {
        "objectives": {"accuracy": "max", spec["cost"]: "min"},
        "search.seed": seed,
        "search.trials": 10_000,  # the budget ends every study first
        "search.epoch_budget": args.budget[problem],
        "search.time_budget_s": None,
        "search.max_concurrent": 2,
        "search.early_stopping": {"grace_period": GRACE, "reduction_factor": ETA, "min_trials_per_rung": 3},
        "train.epochs": args.epochs[problem],
        "execution.results": str(workdir),
    }
    if spec["cost"] != "latency_ms":
        out["latency.repeats"] = 5  # not an objective: time only what the table shows
        out["latency.final_repeats"] = 10
    if args.quick:
        out["teacher.train.epochs"] = 5
    return out


# -- hypervolume ------------------------------------------------------------------------------


def hypervolume(points: list[tuple[float, float]], box: dict) -> float:
    """Normalised hypervolume of (accuracy, cost) points in the problem's box."""
    from autodistill.pareto import hypervolume as hv

    ref_error, log_min, log_ref = box["error_ref"], box["log_min"], box["log_ref"]
    pts = [(1.0 - acc, max(math.log10(c), log_min)) for acc, c in points if 1.0 - acc < ref_error and c > 0 and math.log10(c) < log_ref]
    if not pts:
        return 0.0
    return hv(np.array(pts), [ref_error, log_ref]) / (ref_error * (log_ref - log_min))


def hv_curve(done: list[dict], box: dict, cost: str) -> list[tuple[int, float]]:
    """(student-epochs spent, hypervolume) after each completed trial, in completion order."""
    curve, points = [], []
    for row in sorted(done, key=lambda r: r["study_epochs"]):
        points.append((float(row["accuracy"]), float(row[cost])))
        curve.append((int(row["study_epochs"]), hypervolume(points, box)))
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


def problem_box(args, problem: str, workdir: Path) -> dict:
    """The hypervolume box, fixed per problem: the teacher's cost (its latency measured once)
    is the reference."""
    path = workdir / f"{problem}-box.json"
    if path.exists():
        return json.loads(path.read_text())
    from _search_trial import load_problem

    spec = PROBLEMS[problem]
    _, _, _, _, teacher = load_problem(str(study_file(problem, workdir)), base_overrides(args, problem, workdir, 0), quiet=False)
    box = {
        "error_ref": spec["error_ref"],
        "log_min": spec["log_min"],
        "log_ref": math.log10(float(teacher["metrics"][spec["cost"]])),
        "teacher": teacher["metrics"],
    }
    path.write_text(json.dumps(box))
    return box


# -- the arms -------------------------------------------------------------------------------


def run_ours(args, problem: str, arm: str, seed: int, workdir: Path, log_path: Path) -> tuple[list[dict], dict]:
    from autodistill.loading import load_config
    from autodistill.tune.runner import run_study

    overrides = {**base_overrides(args, problem, workdir, seed), **OURS[arm], "name": f"{problem}-{arm.replace('+', '_')}-s{seed}"}
    if args.quick and "search.prescreen" in overrides:
        overrides["search.prescreen"] = {"candidates": 6, "epochs": 1, "keep": 3}
    config = load_config(study_file(problem, workdir), overrides)
    shutil.rmtree(workdir / config.name, ignore_errors=True)  # an interrupted earlier attempt
    with open(log_path, "w") as log, contextlib.redirect_stdout(log):
        result = run_study(config, log=lambda m: print(m, file=log, flush=True))
    trials = result.trials
    cost = PROBLEMS[problem]["cost"]
    done = ours_done(trials, cost)
    counts = {state: int((trials["state"] == state).sum()) for state in ("COMPLETE", "PRUNED", "FAIL")}
    return done, {"trials": counts, "epochs_spent": int(result.summary["epochs_spent"])}


def ours_done(trials, cost: str) -> list[dict]:
    """The completed trials of a study's table, with their searched values (``point``)."""
    columns = [c for c in trials.columns if c.startswith("param.")]
    out = []
    for _, r in trials[trials["state"] == "COMPLETE"].iterrows():
        point = {c[len("param.") :]: _plain(r[c]) for c in columns if not (isinstance(r[c], float) and math.isnan(r[c]))}
        out.append({"accuracy": float(r["accuracy"]), cost: float(r[cost]), "study_epochs": int(r["study_epochs"]), "point": point})
    return out


def _plain(value):
    return value.item() if hasattr(value, "item") else value


class EpochLedger:
    """The budget of a peer arm: every trained epoch, in order, across threads or processes."""

    def __init__(self, budget: int):
        self.budget = budget
        self.spent = 0
        self.lock = threading.Lock()

    def take(self) -> int | None:
        """Count one epoch; None once the budget is spent (the epoch does not count)."""
        with self.lock:
            if self.spent >= self.budget:
                return None
            self.spent += 1
            return self.spent


def run_optunahub(args, problem: str, seed: int, workdir: Path, log_path: Path) -> tuple[list[dict], dict]:
    """A plain Optuna loop (TPE as ours, 2 threads) with OptunaHub's multi-metric pruner."""
    import optuna
    import optunahub
    import torch
    from _search_trial import load_problem, run_trial

    from autodistill.space import sample, search_space
    from autodistill.tune.runner import make_sampler

    module = optunahub.load_local_module("pruners/multi_metric_pruner", registry_root=str(Path(args.optunahub_registry) / "package"))
    cost = PROBLEMS[problem]["cost"]
    config, task, data, targets, _ = load_problem(str(study_file(problem, workdir)), base_overrides(args, problem, workdir, seed))
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directions = {"accuracy": "maximize", cost: "minimize"}
    # the package's own example wraps MedianPruner; SuccessiveHalvingPruner cannot be wrapped
    # (it writes its rungs to the synthetic trial, id -1: KeyError in Optuna's storage)
    pruner = module.MultiMetricPruner(optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=GRACE - 1), metric_directions=directions, joint=True)
    study = optuna.create_study(directions=list(directions.values()), sampler=make_sampler(config), pruner=pruner)
    space = search_space(config)
    ledger = EpochLedger(args.budget[problem])
    done: list[dict] = []
    counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0}

    def objective(trial: optuna.Trial):
        mmt = module.MultiMetricPrunerTrial(trial)
        params = sample(trial, space)
        last: dict = {}

        def on_epoch(epoch, epochs, metrics) -> bool:
            if ledger.take() is None:
                study.stop()
                return True
            last["at"] = ledger.spent
            mmt.report({"accuracy": float(metrics["accuracy"]), cost: float(metrics[cost])}, epoch)
            return epoch < epochs and mmt.should_prune()

        final = run_trial(config, task, data, targets, params, config.search.seed + trial.number, on_epoch)
        if "stopped_at" in final:
            counts["PRUNED"] += 1
            raise optuna.TrialPruned()
        counts["COMPLETE"] += 1
        done.append({"accuracy": float(final["accuracy"]), cost: float(final[cost]), "study_epochs": last["at"], "point": params})
        return float(final["accuracy"]), float(final[cost])

    with open(log_path, "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        study.optimize(objective, n_trials=10_000, n_jobs=2, catch=(RuntimeError, ValueError))
    counts["FAIL"] = sum(t.state == optuna.trial.TrialState.FAIL for t in study.get_trials(deepcopy=False))
    return done, {"trials": counts, "epochs_spent": ledger.spent}


def syne_space(config) -> dict:
    """The study's space in Syne Tune's terms (every dimension; the trial drops the inactive)."""
    from syne_tune.config_space import choice, finrange, lograndint, loguniform, randint, uniform

    from autodistill._tunable import Choice, FloatRange, IntRange
    from autodistill.space import search_space

    out = {}
    for dim in search_space(config):
        d = dim.dist
        if isinstance(d, Choice):
            out[dim.name] = choice(list(d.choice))
        elif isinstance(d, IntRange):
            out[dim.name] = (
                lograndint(d.low, d.high)
                if d.log
                else (finrange(d.low, d.high, (d.high - d.low) // d.step + 1, cast_int=True) if d.step and d.step != 1 else randint(d.low, d.high))
            )
        elif isinstance(d, FloatRange):
            if d.step:
                out[dim.name] = finrange(d.low, d.high, int(round((d.high - d.low) / d.step)) + 1)
            else:
                out[dim.name] = loguniform(d.low, d.high) if d.log else uniform(d.low, d.high)
    return out


def run_moasha(args, problem: str, seed: int, workdir: Path, log_path: Path) -> tuple[list[dict], dict]:
    """Syne Tune's MOASHA (random proposals) through its LocalBackend, 2 workers."""
    import logging

    from syne_tune import StoppingCriterion, Tuner
    from syne_tune.backend import LocalBackend
    from syne_tune.optimizer.schedulers.multiobjective.moasha import MOASHA

    from autodistill.loading import load_config

    cost = PROBLEMS[problem]["cost"]
    file = study_file(problem, workdir)
    overrides = base_overrides(args, problem, workdir, seed)
    config = load_config(file, overrides)
    events = workdir / "events" / f"{problem}-moasha-s{seed}.jsonl"
    events.parent.mkdir(parents=True, exist_ok=True)
    events.unlink(missing_ok=True)
    space = {
        **syne_space(config),
        "bench_study_file": str(file),
        "bench_overrides": json.dumps(overrides),
        "bench_events": str(events),
        "bench_seed": seed,
    }
    np.random.seed(seed)  # MOASHA's proposals and bracket draws use NumPy's global generator
    scheduler = MOASHA(
        config_space=space,
        metrics=["accuracy", cost],
        do_minimize=True,
        time_attr="epoch",
        max_t=args.epochs[problem],
        grace_period=GRACE,
        reduction_factor=ETA,
        random_seed=seed,
    )
    os.environ["SYNETUNE_FOLDER"] = str(workdir / "syne-tune")
    budget = args.budget[problem]
    with open(log_path, "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        logging.getLogger("syne_tune").setLevel(logging.WARNING)
        tuner = Tuner(
            trial_backend=LocalBackend(entry_point=str(Path(__file__).resolve().with_name("_search_trial.py")), pass_args_as_json=True),
            scheduler=scheduler,
            stop_criterion=StoppingCriterion(max_num_evaluations=budget - 1),
            n_workers=2,
            sleep_time=0.2,
            save_tuner=False,
            tuner_name=f"{problem}-moasha-s{seed}",
            print_update_interval=600,
        )
        cwd = os.getcwd()
        os.chdir(workdir)  # Syne Tune may leave an empty std.out in the working directory
        try:
            tuner.run()
        finally:
            os.chdir(cwd)
    return events_to_done(events, budget, cost)


def events_to_done(events: Path, budget: int, cost: str) -> tuple[list[dict], dict]:
    """The completed trials of an events file, each at the student-epochs spent when it
    ended; epochs past the budget are not counted (the tuner stops the trials there)."""
    rows = [json.loads(line) for line in events.read_text().splitlines() if line.strip()]
    rows.sort(key=lambda r: r["t"])
    spent, done, started, cut = 0, [], set(), set()
    counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0}
    for r in rows:
        if r.get("final"):
            if r["trial"] in started and r["trial"] not in cut:
                done.append({"accuracy": float(r["accuracy"]), cost: float(r[cost]), "study_epochs": spent, "point": r.get("params_searched")})
                counts["COMPLETE"] += 1
            continue
        started.add(r["trial"])
        if spent < budget:
            spent += 1
        else:
            cut.add(r["trial"])  # an epoch past the budget: the trial did not finish within it
    counts["PRUNED"] = len(started) - counts["COMPLETE"]
    return done, {"trials": counts, "epochs_spent": spent}


# -- running and summarising -----------------------------------------------------------------


def run_one(args, problem: str, arm: str, seed: int, box: dict) -> dict:
    """One study; its record is kept in ``workdir/runs`` so a re-run skips it."""
    workdir = args.workdir
    settings = {"budget": args.budget[problem], "epochs": args.epochs[problem], "quick": args.quick}
    record_path = workdir / "runs" / f"{problem}-{arm}-s{seed}.json"
    if record_path.exists():
        record = json.loads(record_path.read_text())
        if record["settings"] == settings:
            done = cached_done(args, problem, arm, seed, record)
            if done is not None:
                record["done"] = done
                return record
    earlier = earlier_run(args, problem, arm, seed, settings)
    if earlier is not None:
        if earlier["done"]:  # older exact-cost records keep their curve only
            earlier["curve"] = hv_curve(earlier["done"], box, PROBLEMS[problem]["cost"])
            earlier["final_hypervolume"] = earlier["curve"][-1][1] if earlier["curve"] else 0.0
        return earlier
    log_path = workdir / "logs" / f"{problem}-{arm}-s{seed}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if arm == "moasha":
        done, info = run_moasha(args, problem, seed, workdir, log_path)
    elif arm == "optunahub":
        done, info = run_optunahub(args, problem, seed, workdir, log_path)
    else:
        done, info = run_ours(args, problem, arm, seed, workdir, log_path)
    curve = hv_curve(done, box, PROBLEMS[problem]["cost"])
    record = {
        "settings": settings,
        "problem": problem,
        "arm": arm,
        "seed": seed,
        **info,
        "final_hypervolume": curve[-1][1] if curve else 0.0,
        "curve": curve,
        "wall_s": time.perf_counter() - started,
        "done": done,
    }
    record_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = record_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(record_path)
    return record


def earlier_run(args, problem: str, arm: str, seed: int, settings: dict) -> dict | None:
    """The same study from the results file of an earlier run (``--keep``), when it was run
    with the same settings and kept the searched values of its completed trials (what a
    re-measure of the latencies needs); its curve is recomputed in this run's box. Exact-cost
    records of earlier versions of this script hold their curve without the trials: kept as
    they are (no re-measure touches them)."""
    for r in args.earlier.get(problem, []):
        if (r["arm"], r["seed"]) == (arm, seed) and r["settings"] == settings and all(d.get("point") is not None for d in r["done"]):
            record = json.loads(json.dumps(r))  # a copy: the re-measure rewrites it
            for d in record["done"]:
                if "latency_ms_in_trial" in d:  # the in-trial figure, as a new run would have it
                    d["latency_ms"] = d.pop("latency_ms_in_trial")
            record["kept_from"] = "search.json"
            return record
    return None


def cached_done(args, problem: str, arm: str, seed: int, record: dict) -> list[dict] | None:
    """The completed trials of a finished study, with their searched values: from the record,
    else from what the study left (its trials table, or the peer's events); None when only a
    new run can tell (a plain Optuna loop keeps nothing)."""
    if "done" in record and all(d.get("point") is not None for d in record["done"]):
        return record["done"]
    if PROBLEMS[problem]["cost"] != "latency_ms":
        return record.get("done", [])  # exact costs: the record's curve is final, nothing to re-measure
    cost = PROBLEMS[problem]["cost"]
    if arm == "moasha":
        events = args.workdir / "events" / f"{problem}-{arm}-s{seed}.jsonl"
        return events_to_done(events, args.budget[problem], cost)[0] if events.exists() else None
    table = args.workdir / f"{problem}-{arm.replace('+', '_')}-s{seed}" / "trials.csv"
    if arm in OURS and table.exists():
        import pandas as pd

        return ours_done(pd.read_csv(table), cost)
    return None


def student_key(point: dict) -> str:
    """What the latency of a student depends on: its architecture (the student.* values)."""
    return json.dumps(sorted((k, v) for k, v in point.items() if k.startswith("student.")))


def remeasure(args, problem: str, runs: list[dict], box: dict) -> dict:
    """Latency of every completed student of every arm, and of the teacher, measured again
    alone, the same way (``latency.final_repeats`` runs, one thread, batch 1), in this process
    after the studies: in-trial figures depend on what ran beside them (Ray workers, threads
    of one process, Syne Tune's processes). Replaces each trial's cost (the in-trial figure is
    kept as ``latency_ms_in_trial``), the box's reference and every curve. Cached per student
    architecture in ``workdir/<problem>-latency.json``."""
    from _search_trial import load_problem

    from autodistill.measure import measure_latency
    from autodistill.space import resolve

    cache_path = args.workdir / f"{problem}-latency.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    config, task, data, targets, _ = load_problem(str(study_file(problem, args.workdir)), base_overrides(args, problem, args.workdir, 0))
    repeats = config.latency.final_repeats
    if "teacher" not in cache:
        teachers = task.prepare_teachers(config, data, log=lambda m: None)
        cache["teacher"] = measure_latency(teachers.models[0], tuple(data.x_train.shape[1:]), config.latency, repeats=repeats).median_ms
    todo = {student_key(d["point"]): d["point"] for r in runs for d in r["done"] if student_key(d["point"]) not in cache}
    print(f"{problem}: re-measuring the latency of {len(todo)} students alone ({repeats} runs each)", flush=True)
    for key, point in todo.items():
        run = task.start_trial(resolve(config, point), config, data, targets, 0)
        cache[key] = measure_latency(run.model, run.input_shape, config.latency, repeats=repeats).median_ms
    tmp = cache_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(cache))
    tmp.replace(cache_path)
    box = {**box, "log_ref": math.log10(cache["teacher"]), "teacher_latency_ms_alone": cache["teacher"]}
    for r in runs:
        for d in r["done"]:
            d.setdefault("latency_ms_in_trial", d["latency_ms"])
            d["latency_ms"] = cache[student_key(d["point"])]
        r["curve"] = hv_curve(r["done"], box, "latency_ms")
        r["final_hypervolume"] = r["curve"][-1][1] if r["curve"] else 0.0
    return box


def within_quarter(fractions: list[float | None]) -> bool:
    """Target 1 for one arm: random's final reached with at most 1/4 of the budget on every seed."""
    return all(f is not None and f <= 0.25 for f in fractions)


def _ranks(values: list[float]) -> list[int]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0] * len(values)
    for rank, i in enumerate(order):
        ranks[i] = rank
    return ranks


def in_trial_latency(runs: list[dict]) -> dict | None:
    """How well the latency a trial measured beside the others (what its sampler and early
    stopping saw) agrees with its student's latency re-measured alone: Spearman's rank
    correlation per seed, the median of |log(in-trial / alone)| over all completed trials,
    and the median max/min of the in-trial figures of one student trained more than once."""
    pairs = [[(d["latency_ms_in_trial"], d["latency_ms"]) for d in r.get("done", []) if "latency_ms_in_trial" in d] for r in runs]
    if not any(pairs):
        return None
    rhos = []
    for seed in (p for p in pairs if len(p) > 2):
        rx, ry = _ranks([a for a, _ in seed]), _ranks([b for _, b in seed])
        rhos.append(statistics.correlation(rx, ry))
    repeats = []
    for r in runs:
        by_student: dict[str, list[float]] = {}
        for d in r.get("done", []):
            if "latency_ms_in_trial" in d:
                by_student.setdefault(student_key(d["point"]), []).append(d["latency_ms_in_trial"])
        repeats += [max(v) / min(v) for v in by_student.values() if len(v) > 1]
    return {
        "spearman_per_seed": rhos,
        "median_abs_log_ratio": statistics.median(abs(math.log(a / b)) for p in pairs for a, b in p),
        "same_student_max_over_min": statistics.median(repeats) if repeats else None,
    }


def summarise(runs: list[dict], budget: int, arms: list[str]) -> dict:
    goal_runs = [r for r in runs if r["arm"] == BASELINE]
    goal = statistics.fmean(r["final_hypervolume"] for r in goal_runs) if goal_runs else None
    out: dict[str, dict] = {}
    for arm in arms:
        mine = [r for r in runs if r["arm"] == arm]
        if not mine:
            continue
        reach = [epochs_to_reach(r["curve"], goal) if goal is not None else None for r in mine]
        out[arm] = {
            "arm": arm,
            "peer": arm in PEERS,
            "final_hypervolume": mean_std([r["final_hypervolume"] for r in mine]),
            "hypervolume_at_quarter": mean_std([hv_at(r["curve"], budget / 4) for r in mine]),
            "fraction_to_reach_random": [None if e is None else e / budget for e in reach],
            "trials": {k: statistics.fmean(r["trials"][k] for r in mine) for k in ("COMPLETE", "PRUNED", "FAIL")},
            "wall_s": statistics.fmean(r["wall_s"] for r in mine),
        }
        fidelity = in_trial_latency(mine)
        if fidelity:
            out[arm]["in_trial_latency"] = fidelity
    targets = {}
    ours = [a for a in out if not out[a]["peer"] and a != BASELINE]
    if ours and goal is not None:
        best = max(ours, key=lambda a: out[a]["final_hypervolume"]["mean"])
        fractions = out[best]["fraction_to_reach_random"]
        targets[f"{best} (best of ours) reaches {BASELINE}'s final hypervolume with <= 1/4 of the compute on every seed"] = {
            "random final hypervolume (mean)": goal,
            "fractions": fractions,
            "met": within_quarter(fractions),
        }
        for peer in (a for a in out if out[a]["peer"]):
            targets[f"{best} final hypervolume >= {peer}'s"] = {
                "ours": out[best]["final_hypervolume"]["mean"],
                "peer": out[peer]["final_hypervolume"]["mean"],
                "met": out[best]["final_hypervolume"]["mean"] >= out[peer]["final_hypervolume"]["mean"],
            }
        peers = [out[a]["final_hypervolume"]["mean"] for a in out if out[a]["peer"]]
        both = [a for a in ours if within_quarter(out[a]["fraction_to_reach_random"]) and all(out[a]["final_hypervolume"]["mean"] >= p for p in peers)]
        targets[f"an arm of ours reaches {BASELINE}'s final with <= 1/4 of the compute on every seed and ends >= every peer"] = {
            "arms": both,
            "met": bool(both),
        }
    return {"arms": out, "targets": targets}


def plot(payload: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = list(payload["problems"])
    fig, axes = plt.subplots(1, len(problems), figsize=(6.5 * len(problems), 4.5), squeeze=False)
    colors = {
        "random": "tab:gray",
        "tpe+pareto": "tab:red",
        "tpe+pareto+prescreen": "darkred",
        "tpe+pareto+spread": "tab:pink",
        "tpe+pareto+startup4": "tab:olive",
        "tpe+pareto+spread4": "tab:brown",
        "tpe+pareto+students": "gold",
        "tpe+pareto+students3": "teal",
        "tpe+pareto+students4": "black",
        "tpe+pareto+students6": "darkgoldenrod",
        "gp": "tab:green",
        "moasha": "tab:blue",
        "optunahub": "tab:purple",
        "tpe": "tab:orange",
        "tpe+asha": "tab:cyan",
    }
    for ax, problem in zip(axes[0], problems):
        block = payload["problems"][problem]
        budget = block["budget_student_epochs"]
        grid = np.linspace(0, budget, 61)
        for arm in block["summary"]["arms"]:
            mine = [r for r in block["runs"] if r["arm"] == arm]
            values = np.array([[hv_at(r["curve"], x) for x in grid] for r in mine])
            style = "--" if arm in PEERS else "-"
            ax.plot(grid, values.mean(0), color=colors.get(arm), linestyle=style, label=arm + (" (peer)" if arm in PEERS else ""))
            ax.fill_between(grid, values.min(0), values.max(0), color=colors.get(arm), alpha=0.08)
        ax.axvline(budget / 4, color="black", linewidth=0.5, linestyle=":")
        ax.set_title(PROBLEMS[problem]["what"])
        ax.set_xlabel("student-epochs spent")
        ax.set_ylabel("normalised hypervolume (mean; band: min-max over seeds)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def table(block: dict) -> str:
    latency = any("in_trial_latency" in arm for arm in block["summary"]["arms"].values())
    rows = [
        "| arm | final hypervolume | at 1/4 of the budget | share of the budget to reach random's final, per seed | trials complete / stopped |"
        + (" in-trial latency vs alone: Spearman (min-max over seeds), median error |" if latency else ""),
        "|---|---|---|---|---|" + ("---|" if latency else ""),
    ]
    for arm in block["summary"]["arms"].values():
        hv, quarter = arm["final_hypervolume"], arm["hypervolume_at_quarter"]
        fractions = ", ".join("never" if f is None else f"{f:.2f}" for f in arm["fraction_to_reach_random"])
        name = f"{arm['arm']} (peer)" if arm["peer"] else arm["arm"]
        row = (
            f"| {name} | {hv['mean']:.4f} ± {hv['std']:.4f} | {quarter['mean']:.4f} ± {quarter['std']:.4f} | {fractions} | "
            f"{arm['trials']['COMPLETE']:.1f} / {arm['trials']['PRUNED']:.1f} |"
        )
        if latency:
            f = arm.get("in_trial_latency")
            row += f" {min(f['spearman_per_seed']):.2f}-{max(f['spearman_per_seed']):.2f}, {math.exp(f['median_abs_log_ratio']) - 1:.0%} |" if f else " |"
        rows.append(row)
    return "\n".join(rows)


def report(payload: dict) -> None:
    for problem, block in payload["problems"].items():
        print(f"\n{PROBLEMS[problem]['what']} ({block['budget_student_epochs']} student-epochs, {block['seeds']} seeds)\n")
        print(table(block))
        if block.get("skipped"):
            print(f"\nskipped: {block['skipped']}")
        print()
        for target, result in block["summary"]["targets"].items():
            print(f"{'met' if result['met'] else 'MISSED'}: {target}: {json.dumps({k: v for k, v in result.items() if k != 'met'})}")


def load_earlier(args) -> dict | None:
    """``--keep``: the runs of the results file, per problem, in ``args.earlier``; returns the
    machine they ran on (None without ``--keep`` or a file)."""
    args.earlier = {}
    path = OUT_DIR / ("search_quick.json" if args.quick else "search.json")
    if not (args.keep and path.exists()):
        return None
    payload = json.loads(path.read_text())
    args.earlier = {p: b["runs"] for p, b in payload["problems"].items()}
    return payload["machine"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    parser.add_argument("--arms", nargs="+", default=list(DEFAULT_ARMS), choices=[*OURS, "moasha", "optunahub"])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=ROOT / "results" / "bench_search", help="where the studies are kept")
    parser.add_argument("--optunahub-registry", default=os.environ.get("OPTUNAHUB_REGISTRY"), help="a checkout of optuna/optunahub-registry")
    parser.add_argument("--quick", action="store_true", help="1 seed, short trials, small budgets: a smoke run")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="take the studies that results/benchmarks/search.json already holds (same settings) instead of running them again, "
        "and keep its arms in the table: run only new arms or seeds (latencies are re-measured for all on this machine)",
    )
    parser.add_argument("--report", action="store_true", help="print the tables and redraw the plot from results/benchmarks/search.json; run nothing")
    args = parser.parse_args()
    if args.report:
        payload = json.loads((OUT_DIR / "search.json").read_text())
        plot(payload, OUT_DIR / "search.png")
        report(payload)
        return
    args.budget = {p: PROBLEMS[p]["budget"] for p in PROBLEMS}
    args.epochs = {p: PROBLEMS[p]["epochs"] for p in PROBLEMS}
    if args.quick:
        args.seeds = 1
        args.budget, args.epochs = {"digits": 40, "shapes": 24}, {"digits": 4, "shapes": 3}
        args.workdir = args.workdir.with_name(args.workdir.name + "_quick")
    arms, skipped = list(args.arms), ""
    if "optunahub" in arms:
        registry = Path(args.optunahub_registry or "/nonexistent") / "package" / "pruners" / "multi_metric_pruner"
        if not registry.is_dir():
            arms.remove("optunahub")
            skipped = "optunahub: OptunaHub loads its packages from GitHub at run time and this machine has no network; pass --optunahub-registry <a checkout of optuna/optunahub-registry>"
    if "moasha" in arms and importlib.util.find_spec("syne_tune") is None:
        arms.remove("moasha")
        skipped = "; ".join(filter(None, [skipped, "moasha: syne-tune is not installed (pip install -e '.[bench]')"]))
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    earlier_machine = load_earlier(args)
    from _search_trial import accept_synthetic_cifar

    accept_synthetic_cifar()
    info = machine()
    info.update({k: v for k, v in _peer_versions().items()})
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, optuna {info['optuna']}, syne-tune {info['syne-tune']}")
    payload = {"machine": info, "problems": {}}
    if earlier_machine is not None:  # the kept studies ran there (and the peers' versions are theirs)
        payload["machine"]["kept_runs_from"] = earlier_machine.get("kept_runs_from", earlier_machine)
    started = time.time()
    for problem in args.problems:
        box = problem_box(args, problem, args.workdir)
        runs = []
        kept = [r["arm"] for r in args.earlier.get(problem, []) if r["arm"] not in arms and r["seed"] < args.seeds]
        arms_here = [*arms, *dict.fromkeys(kept)]  # --keep: the earlier arms stay in the table
        print(f"{problem}: {len(arms_here)} arms x {args.seeds} seeds, {args.budget[problem]} student-epochs each", flush=True)
        for seed in range(args.seeds):  # seeds outermost: an interrupted run leaves every arm with the same seeds done
            for arm in arms_here:
                r = run_one(args, problem, arm, seed, box)
                runs.append(r)
                print(
                    f"  {problem} seed {seed} {arm:>22}: hypervolume {r['final_hypervolume']:.4f}  complete {r['trials']['COMPLETE']:>3}  "
                    f"stopped {r['trials']['PRUNED']:>3}  failed {r['trials']['FAIL']}  epochs {r['epochs_spent']}  ({r['wall_s']:.0f} s{', kept' if 'kept_from' in r else ''}; {time.time() - started:.0f} s so far)",
                    flush=True,
                )
        if PROBLEMS[problem]["cost"] == "latency_ms":
            box = remeasure(args, problem, runs, box)
        payload["problems"][problem] = {
            "what": PROBLEMS[problem]["what"],
            "objectives": {"accuracy": "max", PROBLEMS[problem]["cost"]: "min"},
            "budget_student_epochs": args.budget[problem],
            "trial_epochs": args.epochs[problem],
            "seeds": args.seeds,
            "box": box,
            "skipped": skipped,
            "summary": summarise(runs, args.budget[problem], [a for a in dict.fromkeys((*OURS, *PEERS)) if a in arms_here]),
            "runs": runs,
        }
    name = "search_quick" if args.quick else "search"
    earlier = OUT_DIR / f"{name}.json"
    if earlier.exists():  # a run of some problems keeps the others' results
        kept = json.loads(earlier.read_text()).get("problems", {})
        payload["problems"] = {**{p: b for p, b in kept.items() if p not in payload["problems"]}, **payload["problems"]}
    path = write(name, payload)
    plot(payload, OUT_DIR / f"{name}.png")
    print(f"\nwrote {path} and {OUT_DIR / (name + '.png')}")
    report(payload)


def _peer_versions() -> dict:
    import importlib.metadata as md

    out = {}
    for name in ("optuna", "syne-tune", "optunahub", "ray"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


if __name__ == "__main__":
    main()
