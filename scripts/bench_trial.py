"""Trial overhead benchmark: what a trial spends besides the student's own training steps.

    python scripts/bench_trial.py            # ~15 min on a 2-core CPU
    python scripts/bench_trial.py --quick    # a smoke run (~1.5 min)

(a) KD epoch time / CE-only epoch time of the same student, with the teacher's outputs cached
    (``TeacherTargets.logits``; with augmentation, its cached views) and with a live teacher
    run on every batch (the baseline), on digits (8x8x1) and on a 32x32x3 synthetic
    workload (crop + flip for the augmented rows); and the same with feature and attention
    losses, whose teacher stage outputs are cached or computed live; and an image folder of
    PNG files in memory vs streamed by DataLoader workers (``data.storage``). Time inside the training steps of each
    epoch, one torch thread (a trial's default); modes are measured in interleaved rounds and
    the ratio is taken within each round; median and range over rounds.
(b) Share of the default study's time spent inside training steps
    (``search_spaces/digits.yaml`` run by the CLI, the teacher already cached): the sum of
    the trials' step time over (search time x search.max_concurrent), and over the whole
    run's wall time.
(c) Orchestration overhead per trial: trial slots not spent inside the trial function, and
    what the trial function spends outside its steps (evaluation, latency, checkpoints).
(d) Peak resident memory of the driver and of a trial worker.

Writes ``results/benchmarks/trial.json`` and prints the README table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from _bench import ROOT, machine, spread, synthetic, write  # noqa: E402

from autodistill.config import parse_config  # noqa: E402
from autodistill.data import load_dataset  # noqa: E402
from autodistill.distill import train  # noqa: E402
from autodistill.layout import trial_dir  # noqa: E402
from autodistill.loading import load_config  # noqa: E402
from autodistill.students import build_student, make_spec  # noqa: E402
from autodistill.targets import TeacherTargets  # noqa: E402
from autodistill.teacher import teacher_outputs  # noqa: E402

WORKLOADS = {
    "digits 8x8x1": {
        "student": ("cnn", {"widths": [16, 32, 64], "depths": [2, 2, 1], "width_mult": 0.5}),
        "teacher": ("resnet", {"widths": [32, 64, 128], "depths": [2, 2, 2]}),  # the default study's
        "batch_size": 64,
        "augment": None,
    },
    "synthetic 32x32x3": {
        "student": ("resnet", {"widths": [16, 32, 64], "depths": [1, 1, 1]}),
        "teacher": ("resnet", {"widths": [64, 128, 256], "depths": [2, 2, 2]}),
        "batch_size": 128,
        "augment": {"crop_padding": 4, "flip": True, "views": 8},
    },
}


def epoch_step_s(data, spec, train_cfg, distill_cfg, targets, augment) -> float:
    """Median over epochs of the time inside the training steps."""
    model = build_student(spec, seed=0)
    history = train(model, data, train_cfg, distill_cfg, targets, augment=augment, seed=0)
    return statistics.median(h.steps_s for h in history)


def bench_epochs(args) -> dict:
    out = {}
    for name, w in WORKLOADS.items():
        data = load_dataset(parse_config({}).data) if name.startswith("digits") else synthetic(args.synthetic_n)
        config = parse_config(
            {"train": {"epochs": args.epochs, "batch_size": w["batch_size"]}, "augment": w["augment"] or {}, "execution": {"results": args.workdir}}
        )
        spec = make_spec(w["student"][0], w["student"][1], data)
        teacher = build_student(make_spec(w["teacher"][0], w["teacher"][1], data), seed=0).eval()
        started = time.perf_counter()
        cached = teacher_outputs(teacher, data, config, log=lambda m: None)
        cache_s = time.perf_counter() - started
        modes = {
            "ce": (None, None, None),
            "kd cached": (config.distill, TeacherTargets(logits=cached.logits), None),
            "kd live": (config.distill, TeacherTargets(live=teacher), None),
        }
        # Feature (FitNets, every stage) + attention-transfer losses: the teacher's stage
        # outputs cached once vs computed on every batch.
        feat_config = parse_config(
            {**config.model_dump(mode="json"), "augment": {}, "distill": {"feature_weight": 1.0, "feature_stages": "all", "attention_weight": 10.0}}
        )
        with_feats = teacher_outputs(teacher, data, feat_config, log=lambda m: None)
        modes.update(
            {
                "kd + features cached": (feat_config.distill, with_feats, None),
                "kd + features live": (feat_config.distill, TeacherTargets(logits=cached.logits, live=teacher), None),
            }
        )
        if w["augment"]:
            modes.update(
                {
                    "ce + aug": (None, None, config.augment),
                    "kd cached views + aug": (config.distill, cached, config.augment),
                    "kd live + aug": (config.distill, TeacherTargets(live=teacher), config.augment),
                }
            )
        times: dict[str, list[float]] = {m: [] for m in modes}
        for _ in range(args.rounds):
            for mode, (distill_cfg, targets, augment) in modes.items():
                times[mode].append(epoch_step_s(data, spec, config.train, distill_cfg, targets, augment))
        result = {
            "images": len(data.y_train),
            "student": w["student"],
            "teacher": w["teacher"],
            "batch_size": w["batch_size"],
            "teacher_outputs_s": cache_s,
            "teacher_outputs_mb": cached.nbytes / 2**20,
            "teacher_stage_outputs_mb": with_feats.feature_bytes / 2**20,
            "epoch_steps_s": {},
            "ratio_to_ce": {},
        }
        for mode, values in times.items():
            base = times["ce + aug" if "aug" in mode else "ce"]
            result["epoch_steps_s"][mode] = spread(values)
            result["ratio_to_ce"][mode] = spread([v / b for v, b in zip(values, base)])
        out[name] = result
        print(f"  {name}: " + ", ".join(f"{m} {r['median']:.2f}x" for m, r in result["ratio_to_ce"].items()), flush=True)
    return out


def bench_stream(args) -> dict:
    """An image folder of PNG files (32x32x3), in memory vs streamed by DataLoader workers
    (``data.storage``): CE-only, and KD with cached teacher outputs, streamed."""
    import numpy as np
    from PIL import Image

    root = Path(args.workdir) / "folder"
    rng = np.random.default_rng(0)
    for i in range(args.synthetic_n):
        (root / str(i % 10)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / str(i % 10) / f"{i}.png")
    w = WORKLOADS["synthetic 32x32x3"]
    raw = {
        "data": {"dataset": "imagefolder", "root": str(root), "image_size": 32, "val_fraction": 0.1, "test_fraction": 0.1},
        "train": {"epochs": args.epochs, "batch_size": w["batch_size"]},
        "execution": {"results": args.workdir},
    }
    memory = load_dataset(parse_config({**raw, "data": {**raw["data"], "storage": "memory"}}).data)
    config = parse_config({**raw, "data": {**raw["data"], "storage": "stream", "workers": 2}})
    stream = load_dataset(config.data)
    spec = make_spec(w["student"][0], w["student"][1], memory)
    teacher = build_student(make_spec(w["teacher"][0], w["teacher"][1], memory), seed=0).eval()
    cached = TeacherTargets(logits=teacher_outputs(teacher, stream, config, log=lambda m: None).logits)
    modes = {
        "ce, in memory": (memory, None, None),
        "ce, streamed (2 workers)": (stream, None, None),
        "kd cached, streamed (2 workers)": (stream, config.distill, cached),
    }
    times: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.rounds):
        for mode, (data, distill_cfg, targets) in modes.items():
            times[mode].append(epoch_step_s(data, spec, config.train, distill_cfg, targets, None))
    base = times["ce, in memory"]
    result = {
        "images": len(memory.y_train),
        "student": w["student"],
        "teacher": w["teacher"],
        "batch_size": w["batch_size"],
        "epoch_steps_s": {m: spread(v) for m, v in times.items()},
        "ratio_to_ce": {m: spread([a / b for a, b in zip(v, base)]) for m, v in times.items()},
    }
    print("  folder 32x32x3: " + ", ".join(f"{m} {r['median']:.2f}x" for m, r in result["ratio_to_ce"].items()), flush=True)
    return result


def bench_study(args) -> dict:
    """The default study through the CLI, ``args.studies`` times, teacher cached beforehand."""
    import pandas as pd
    import yaml

    from autodistill.teacher import prepare_teacher

    study_file = ROOT / "search_spaces" / "digits.yaml"
    if args.quick:  # a copy with 6 trials of 5 epochs
        raw = yaml.safe_load(study_file.read_text())
        raw["train"]["epochs"], raw["search"]["trials"] = 5, 6
        study_file = Path(args.workdir) / "digits_quick.yaml"
        study_file.write_text(yaml.safe_dump(raw))
    config = load_config(study_file, {"execution.results": args.workdir})
    prepare_teacher(config, load_dataset(config.data), log=lambda m: None)  # cached: every run below loads it
    runs = []
    for r in range(args.studies):
        name = f"trial-bench-{r}"
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "autodistill", "search", str(study_file), "--results", args.workdir, "--name", name], capture_output=True, text=True
        )
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(f"the study failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        results = Path(args.workdir) / name
        summary = json.loads((results / "study.json").read_text())
        trials = pd.read_csv(results / "trials.csv")
        done = trials[trials["state"] == "COMPLETE"]
        evaluation = 0.0
        for number in done["number"]:
            history = json.loads((trial_dir(results, number) / "metrics.json").read_text())["history"]
            evaluation += sum(h["epoch_s"] - h["steps_s"] for h in history)
        slots = summary["search_s"] * config.search.max_concurrent
        steps, n = float(trials["steps_s"].sum()), len(trials)
        runs.append(
            {
                "trials": n,
                "process_wall_s": wall,
                "study_wall_s": summary["wall_s"],
                "search_s": summary["search_s"],
                "steps_s": steps,
                "trial_s": float(trials["trial_s"].sum()),
                "evaluation_s": evaluation,
                "share_of_search": steps / slots,
                "share_of_process": steps / (wall * config.search.max_concurrent),
                "outside_trial_per_trial_s": (slots - float(trials["trial_s"].sum())) / n,
                "inside_trial_not_steps_per_trial_s": float((trials["trial_s"] - trials["steps_s"]).sum()) / n,
                "evaluation_per_trial_s": evaluation / max(len(done), 1),
                "driver_peak_rss_mb": summary["driver_peak_rss_mb"],
                "worker_peak_rss_mb": float(trials["worker_rss_mb"].max()),
            }
        )
        print(
            f"  study {r + 1}/{args.studies}: steps {runs[-1]['share_of_search']:.0%} of the search's trial slots, "
            f"{runs[-1]['share_of_process']:.0%} of the process; {wall:.0f} s",
            flush=True,
        )
    keys = [k for k in runs[0] if k != "trials"]
    return {
        "config": "search_spaces/digits.yaml" + (" (6 trials of 5 epochs)" if args.quick else ""),
        "max_concurrent": config.search.max_concurrent,
        "runs": runs,
        **{k: spread([r[k] for r in runs]) for k in keys},
    }


def table(payload: dict) -> str:
    rows = ["| workload | mode | epoch steps (s) | ÷ CE-only |", "|---|---|---|---|"]
    for name, w in payload["epochs"].items():
        for mode, t in w["epoch_steps_s"].items():
            r = w["ratio_to_ce"][mode]
            rows.append(f"| {name} | {mode} | {t['median']:.3f} | {r['median']:.2f} ({r['min']:.2f}–{r['max']:.2f}) |")
    s = payload["study"]
    rows += ["", "| default study (digits, 24 trials) | median (range) |", "|---|---|"]
    for key, label, fmt in (
        ("share_of_search", "time inside training steps ÷ (search time × max_concurrent)", "{:.0%}"),
        ("share_of_process", "time inside training steps ÷ (whole run × max_concurrent)", "{:.0%}"),
        ("outside_trial_per_trial_s", "per trial, slot time outside the trial function (s)", "{:.2f}"),
        ("inside_trial_not_steps_per_trial_s", "per trial, inside the trial but not in steps (s)", "{:.2f}"),
        ("evaluation_per_trial_s", "of which validation after each epoch (s)", "{:.2f}"),
        ("driver_peak_rss_mb", "driver peak RSS (MiB)", "{:.0f}"),
        ("worker_peak_rss_mb", "trial worker peak RSS (MiB)", "{:.0f}"),
    ):
        v = s[key]
        rows.append(f"| {label} | {fmt.format(v['median'])} ({fmt.format(v['min'])}–{fmt.format(v['max'])}) |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over the modes of (a)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per measurement of (a)")
    parser.add_argument("--synthetic-n", type=int, default=1000, help="images of the 32x32x3 workload")
    parser.add_argument("--studies", type=int, default=3, help="runs of the default study for (b)-(d)")
    parser.add_argument("--quick", action="store_true", help="1 round of 1 epoch, 1 short study: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.epochs, args.synthetic_n, args.studies = 1, 1, 256, 1
    torch.set_num_threads(1)
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}; one torch thread for (a)", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-trial-") as workdir:
        args.workdir = workdir
        print("(a) KD vs CE-only epoch time", flush=True)
        epochs = bench_epochs(args)
        epochs["folder 32x32x3 (PNG files)"] = bench_stream(args)
        print("(b)-(d) the default study", flush=True)
        study = bench_study(args)
    payload = {
        "machine": info,
        "epochs": epochs,
        "study": study,
        "settings": {"rounds": args.rounds, "epochs": args.epochs, "synthetic_images": args.synthetic_n, "studies": args.studies, "quick": args.quick},
    }
    path = write("trial_quick" if args.quick else "trial", payload)
    print(f"\nwrote {path}\n")
    print(table(payload))


if __name__ == "__main__":
    main()
