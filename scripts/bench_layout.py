"""Memory-layout benchmark: a student's training epoch on the CPU in channels_last (what
:func:`autodistill.distill.train` does) against NCHW (PyTorch's default, and what it did
before), the same student, data, recipe and seed.

    python scripts/bench_layout.py            # ~10 min on a 2-core CPU
    python scripts/bench_layout.py --quick    # a smoke run (~1 min)
    python scripts/bench_layout.py --only live   # those rows again; the others kept from layout.json

Each of the four student families at two workloads: digits (8x8x1, the default study's
data, batch 64) and 1,000 random 32x32x3 images (batch 128), KD against cached teacher
logits (the default study's recipe); and at 32x32 a ResNet student with a ResNet teacher
(widths 64-128-256) run on every cropped and flipped batch (``augment.teacher: live``).
One torch thread (a trial's default). Reported per
student: the time inside the training steps of an epoch and the whole epoch (steps and the
validation after it), in each layout; channels_last / NCHW, taken within each round of
interleaved rounds; median and range over rounds. The student is NCHW again when training
ends: its latency, export and the final accuracy are measured in the layout it ships in.

Writes ``results/benchmarks/layout.json`` and prints the README table.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from _bench import OUT_DIR, machine, spread, synthetic, write  # noqa: E402

from autodistill.config import parse_config  # noqa: E402
from autodistill.data import load_dataset  # noqa: E402
from autodistill.students import build_student, make_spec  # noqa: E402
from autodistill.targets import TeacherTargets  # noqa: E402

TRAIN = importlib.import_module("autodistill.distill.train")  # the module: the package's `train` is the function

STUDENTS = {
    "cnn": {"widths": [16, 32, 64], "depths": [2, 2, 1], "width_mult": 0.5},
    "resnet": {"widths": [16, 32, 64], "depths": [1, 1, 1]},
    "mobilenet": {"widths": [16, 32, 64], "depths": [1, 1, 1]},
    "vit": {},
}
"""one student per family: the first three as in the default study's space, ViT at its defaults"""

LAYOUTS = {"NCHW": False, "channels_last": True}

CACHED = "kd, cached teacher logits"
"""the recipe of the rows of every family: the default study's (rows of layout.json written before rows had a recipe are these)"""


def epoch_s(data, spec, config, targets, channels_last: bool) -> tuple[float, float]:
    """(steps, whole epoch) in seconds, the median over the run's epochs."""
    TRAIN.CPU_CHANNELS_LAST = channels_last
    try:
        model = build_student(spec, seed=0)
        ends: list[float] = []
        started = time.perf_counter()
        history = TRAIN.train(
            model, data, config.train, config.distill, targets, augment=config.augment, seed=0, on_epoch=lambda s: ends.append(time.perf_counter())
        )
    finally:
        TRAIN.CPU_CHANNELS_LAST = True
    whole = [b - a for a, b in zip([started, *ends], ends)]
    return statistics.median(h.steps_s for h in history), statistics.median(whole)


def cases(workdir: str, epochs: int):
    """(workload, student, recipe, data, spec, config, targets) of each row."""
    workloads = {"digits 8x8x1": (load_dataset(parse_config({}).data), 64), "synthetic 32x32x3": (synthetic(1000), 128)}
    for name, (data, batch) in workloads.items():
        config = parse_config({"train": {"epochs": epochs, "batch_size": batch}, "execution": {"results": workdir}})
        g = torch.Generator().manual_seed(1)
        cached = TeacherTargets(logits=torch.randn(len(data.y_train), len(data.classes), generator=g))  # the values do not matter to the time
        for family, dims in STUDENTS.items():
            yield name, family, CACHED, data, make_spec(family, dims, data), config, cached
    # a teacher run on every (cropped and flipped) batch: its forward pass is most of the step
    data, batch = workloads["synthetic 32x32x3"]
    config = parse_config(
        {"train": {"epochs": epochs, "batch_size": batch}, "augment": {"crop_padding": 4, "flip": True, "teacher": "live"}, "execution": {"results": workdir}}
    )
    teacher = build_student(make_spec("resnet", LIVE_TEACHER, data), seed=0).eval()
    yield (
        "synthetic 32x32x3",
        "resnet",
        "kd, live teacher + crop/flip",
        data,
        make_spec("resnet", STUDENTS["resnet"], data),
        config,
        TeacherTargets(live=teacher),
    )


LIVE_TEACHER = {"widths": [64, 128, 256], "depths": [2, 2, 2]}
"""the live teacher's architecture (scripts/bench_trial.py's 32x32 teacher)"""


def measure(case, rounds: int) -> dict:
    name, family, recipe, data, spec, config, targets = case
    times = {layout: {"steps": [], "epoch": []} for layout in LAYOUTS}
    one_epoch = config.model_copy(update={"train": config.train.model_copy(update={"epochs": 1})})
    for flag in LAYOUTS.values():  # warm-up: oneDNN builds its kernels for each shape and layout once per process
        epoch_s(data, spec, one_epoch, targets, flag)
    for _ in range(rounds):
        for layout, flag in LAYOUTS.items():
            steps, whole = epoch_s(data, spec, config, targets, flag)
            times[layout]["steps"].append(steps)
            times[layout]["epoch"].append(whole)
    return {
        "workload": name,
        "family": family,
        "recipe": recipe,
        "dims": spec["dims"],
        "batch_size": config.train.batch_size,
        **{f"{layout}_{k}_s": spread(v) for layout, t in times.items() for k, v in t.items()},
        **{f"ratio_{k}": spread([c / n for c, n in zip(times["channels_last"][k], times["NCHW"][k])]) for k in ("steps", "epoch")},
    }


def _key(row: dict) -> tuple[str, str, str]:
    return row["workload"], row["family"], row.get("recipe", CACHED)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over the layouts")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per measurement")
    parser.add_argument("--only", default="", help="measure only the rows whose 'workload student recipe' contains this; the rest are kept from layout.json")
    parser.add_argument("--quick", action="store_true", help="1 round of 1 epoch: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.epochs = 1, 1
    torch.set_num_threads(1)
    name = "layout_quick" if args.quick else "layout"
    kept = {}
    if args.only and (OUT_DIR / f"{name}.json").is_file():
        kept = {_key(r): r for r in json.loads((OUT_DIR / f"{name}.json").read_text())["rows"]}
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for case in cases(workdir, args.epochs):
            key = tuple(case[:3])
            if args.only not in " ".join(key) and key in kept:
                rows.append(kept[key])
                continue
            row = measure(case, args.rounds)
            rows.append(row)
            print(f"  {' '.join(key)}: steps {row['ratio_steps']['median']:.2f}x, epoch {row['ratio_epoch']['median']:.2f}x", flush=True)
    info = machine()
    payload = {"machine": info, "settings": {"rounds": args.rounds, "epochs": args.epochs, "threads": 1, "quick": args.quick}, "rows": rows}
    path = write(name, payload)
    print(f"\n{info['cpu']}, {info['cores']} cores; wrote {path}\n")
    print("| workload | student | recipe | epoch steps, NCHW (s) | channels_last (s) | steps: channels_last ÷ NCHW | whole epoch: ÷ NCHW |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['workload']} | {r['family']} | {_key(r)[2]} | {r['NCHW_steps_s']['median']:.3f} | {r['channels_last_steps_s']['median']:.3f} | "
            f"{r['ratio_steps']['median']:.2f} ({r['ratio_steps']['min']:.2f}–{r['ratio_steps']['max']:.2f}) | "
            f"{r['ratio_epoch']['median']:.2f} ({r['ratio_epoch']['min']:.2f}–{r['ratio_epoch']['max']:.2f}) |"
        )


if __name__ == "__main__":
    main()
