"""What distillation buys on digits: CE-only training vs the best recipe of a small fixed grid.

    python scripts/bench_kd_gain.py            # ~15 min on a 2-core CPU
    python scripts/bench_kd_gain.py --quick    # a smoke run (~1 min)
    python scripts/bench_kd_gain.py --report   # re-print the table from the JSON

Three CNN students (width_mult 0.25, 0.5, 1.0 of widths [16, 32, 64]) learn from the default
study's ResNet teacher (``search_spaces/digits.yaml``), in three settings (:data:`SETTINGS`):
the full training split with the teacher trained on it; 10% of it (where soft targets should
matter most; 4x the epochs, so both see about as many steps) with that same teacher, which saw
all the labels the students do not; and 10% with a teacher trained on the same 10% only (the
honest low-label case: nobody saw more labels). For each (setting, size) the arm with the
best mean validation accuracy over the seeds is picked among *all* arms, the two without a
teacher (CE only, CE + MixUp) included; the table reports its test accuracy beside CE-only's
and CE + MixUp's, as mean +- std over ``--seeds`` seeds (every arm runs with the same seeds).
The test split is never used to choose.

Writes ``results/benchmarks/kd_gain.json`` and prints the README table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _bench import OUT_DIR, machine, mean_std, write  # noqa: E402

from autodistill.config import parse_config  # noqa: E402
from autodistill.data import load_dataset  # noqa: E402
from autodistill.distill import evaluate, predict_logits, train  # noqa: E402
from autodistill.loading import load_config  # noqa: E402
from autodistill.students import build_student, make_spec  # noqa: E402
from autodistill.targets import TeacherTargets  # noqa: E402
from autodistill.teacher import prepare_teacher  # noqa: E402

SIZES = {"xs (w 0.25)": 0.25, "s (w 0.5)": 0.5, "m (w 1.0)": 1.0}
SETTINGS = {  # name -> (share of the training split the students see, does the teacher see only that share)
    "full": (None, False),
    "10%, teacher on all labels": (0.1, False),
    "10%, teacher on the same 10%": (0.1, True),
}
BASELINES = {"ce only": {}, "ce + mixup": {"mixup": 0.2}}  # no teacher: they compete in the choice too
GRID = {
    "kd a0.7 T4": {"alpha": 0.7, "temperature": {"start": 4.0}},
    "kd a0.9 T4": {"alpha": 0.9, "temperature": {"start": 4.0}},
    "kd a0.7>0.3 sigmoid T6>2": {"alpha": 0.7, "alpha_end": 0.3, "temperature": {"schedule": "sigmoid", "start": 6.0, "end": 2.0}},
    "kd + features": {"alpha": 0.7, "temperature": {"start": 4.0}, "feature_weight": 0.5, "feature_stages": "all"},
    "kd + attention": {"alpha": 0.7, "temperature": {"start": 4.0}, "attention_weight": 10.0, "feature_stages": "all"},
    "kd + mixup": {"alpha": 0.7, "temperature": {"start": 4.0}, "mixup": 0.2},
}


def run(args) -> dict:
    base = load_config(Path(__file__).resolve().parent.parent / "search_spaces" / "digits.yaml", {"execution.results": args.results})
    full = load_dataset(base.data)
    log = lambda m: print(f"  {m}", flush=True)  # noqa: E731
    teacher_all, info_all = prepare_teacher(base, full, log=log)
    print(f"teacher: {info_all.spec['family']}, test accuracy {info_all.test_accuracy:.4f} [{info_all.source}]", flush=True)
    rows, teachers = [], {"all labels": {"test_accuracy": info_all.test_accuracy, "train_samples": len(full.y_train)}}
    for setting, (fraction, teacher_on_share) in SETTINGS.items():
        data_cfg = base.data.model_copy(update={"max_train_samples": max(10, round(fraction * len(full.y_train)))} if fraction else {})
        data = load_dataset(data_cfg)
        teacher = teacher_all
        if teacher_on_share:  # the same subset (data.split_seed), the same teacher recipe
            teacher, info = prepare_teacher(base.model_copy(update={"data": data_cfg}), data, log=log)
            teachers["same 10%"] = {"test_accuracy": info.test_accuracy, "train_samples": len(data.y_train)}
            print(f"teacher on {len(data.y_train)} images: test accuracy {info.test_accuracy:.4f} [{info.source}]", flush=True)
        epochs = args.epochs * (4 if fraction else 1)
        targets = TeacherTargets(logits=predict_logits(teacher, data, "train"), live=teacher)
        for size_name, width in SIZES.items():
            spec = make_spec("cnn", {"widths": [16, 32, 64], "depths": [1, 1, 1], "width_mult": width}, data)
            results = {
                method: _arm(method, recipe, spec, data, targets, epochs, args.seeds, setting, size_name) for method, recipe in {**BASELINES, **GRID}.items()
            }
            best = max(results, key=lambda m: results[m]["val"]["mean"])
            rows.append(
                {
                    "data": setting,
                    "train_samples": len(data.y_train),
                    "epochs": epochs,
                    "size": size_name,
                    "params": sum(p.numel() for p in build_student(spec).parameters()),
                    "best": best,
                    "methods": results,
                }
            )
    return {
        "machine": machine(),
        "seeds": args.seeds,
        "teacher": {"family": info_all.spec["family"], "test_accuracy": info_all.test_accuracy},
        "teachers": teachers,
        "grid": GRID,
        "baselines": BASELINES,
        "rows": rows,
    }


def _arm(method: str, recipe: dict, spec: dict, data, targets, epochs: int, seeds: int, setting: str, size_name: str) -> dict:
    """One arm over the seeds: validation and test accuracy, training seconds."""
    recipe = dict(recipe)
    mixup = recipe.pop("mixup", 0.0)
    uses_teacher = bool(recipe)
    cfg = parse_config(
        {
            "train": {"epochs": epochs, "lr": 0.005, "batch_size": 64},
            "distill": recipe or {"alpha": 0.0},
            "augment": {"mixup": mixup, "teacher": "live"},
        }
    )
    val, test, seconds = [], [], []
    for seed in range(seeds):
        model = build_student(spec, seed=seed)
        started = time.perf_counter()
        train(model, data, cfg.train, cfg.distill if uses_teacher else None, targets if uses_teacher else None, seed=seed, augment=cfg.augment)
        seconds.append(time.perf_counter() - started)
        val.append(evaluate(model, data, "val"))
        test.append(evaluate(model, data, "test"))
    out = {"val": mean_std(val), "test": mean_std(test), "train_s": mean_std(seconds)}
    print(f"  {setting:<28} {size_name:<11} {method:<26} val {out['val']['mean']:.4f} test {out['test']['mean']:.4f} +- {out['test']['std']:.4f}", flush=True)
    return out


def table(payload: dict) -> str:
    lines = [
        "| data | student (params) | CE only, test | CE + MixUp, test | best arm (chosen on val, all arms) | its test | gain over CE only |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in payload["rows"]:
        ce, mix, best = (row["methods"][m]["test"] for m in ("ce only", "ce + mixup", row["best"]))
        lines.append(
            f"| {row['data']} ({row['train_samples']} images) | {row['size']} ({row['params']:,}) | {ce['mean']:.4f} ± {ce['std']:.4f} | "
            f"{mix['mean']:.4f} ± {mix['std']:.4f} | {row['best']} | {best['mean']:.4f} ± {best['std']:.4f} | {best['mean'] - ce['mean']:+.4f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20, help="epochs with the full training split (4x with 10%%)")
    parser.add_argument("--results", default=str(Path(__file__).resolve().parent.parent / "results"), help="where the teacher is cached")
    parser.add_argument("--quick", action="store_true", help="2 seeds, 2 epochs: a smoke run")
    parser.add_argument("--report", action="store_true", help="print the table of results/benchmarks/kd_gain.json")
    args = parser.parse_args()
    if args.report:
        print(table(json.loads((OUT_DIR / "kd_gain.json").read_text())))
        return
    if args.quick:
        args.seeds, args.epochs = 2, 2
    payload = run(args)
    path = write("kd_gain_quick" if args.quick else "kd_gain", payload)  # a smoke run never replaces the real figures
    print(table(payload))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
