"""Compression benchmark: one student, float vs pruned (0.3, 0.5) vs int8 vs pruned + int8.

Pruned 0.3 appears twice: with the exact channel counts (32 -> 22, 128 -> 89) and with
``round_to: 8`` (24, 88), because odd channel counts can make ONNX Runtime's kernels slower
than the unpruned network's.

    python scripts/bench_compress.py            # ~6 min on a 2-core CPU
    python scripts/bench_compress.py --quick    # a smoke run

Each variant is trained on digits exactly as a trial trains it (same loop, pruning after 30%
of the epochs, then fine-tuning; PTQ calibrated on 8 training batches), with cross-entropy
only, so that the numbers are about compression and not about the teacher. Reported per
variant: params, MACs, state-dict size, validation and test accuracy (mean and std over
seeds), and latency at batch 1 and 32 on one thread for each latency backend. Latency is
measured in rounds that visit every variant in turn; the ratio to float is taken within each
round, and the median and range over rounds are reported. Writes
``results/benchmarks/compress.json`` and prints the README table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from _bench import machine, mean_std, spread, write  # noqa: E402

from autodistill.compress import Compression  # noqa: E402
from autodistill.config import LatencyConfig, parse_config  # noqa: E402
from autodistill.data import load_dataset  # noqa: E402
from autodistill.distill import evaluate, train  # noqa: E402
from autodistill.measure import measure_latency, state_dict_mb, static_costs  # noqa: E402
from autodistill.students import build_student, make_spec  # noqa: E402

STUDENT = {"family": "resnet", "widths": [32, 64, 128], "depths": [1, 1, 1]}
VARIANTS = {
    "float": {},
    "pruned 0.3": {"prune_rate": 0.3},
    "pruned 0.3, round_to 8": {"prune_rate": 0.3, "round_to": 8},
    "pruned 0.5": {"prune_rate": 0.5},
    "int8 (PTQ)": {"quantize": "ptq"},
    "pruned 0.5 + int8": {"prune_rate": 0.5, "quantize": "ptq"},
}
BACKENDS = ("torch", "torchscript", "onnxruntime")
BATCHES = (1, 32)


def train_variant(data, compress: dict, epochs: int, seed: int):
    dims = {k: v for k, v in STUDENT.items() if k != "family"}
    cfg = parse_config({"student": {"family": "resnet", "resnet": dims}, "compress": {"prune_at": 0.3, **compress}, "train": {"epochs": epochs, "lr": 3e-3}})
    spec = make_spec("resnet", cfg.student.resnet.model_dump(mode="json"), data)
    model = build_student(spec, seed=seed)
    compression = Compression(cfg.compress, spec, epochs, data, cfg.train.batch_size, model) if cfg.compress.active else None
    train(model, data, cfg.train, seed=seed, compression=compression)
    if compression is None:
        return model, static_costs(model, tuple(data.x_train.shape[1:]))
    costs = static_costs(compression.float_model(), tuple(data.x_train.shape[1:]))
    model = compression.finish()
    costs["size_mb"] = state_dict_mb(model)
    return model, costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=5, help="latency rounds over all variants")
    parser.add_argument("--repeats", type=int, default=100, help="timed runs per latency measurement")
    parser.add_argument("--quick", action="store_true", help="1 seed, 3 epochs, 2 rounds of 20 runs: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.epochs, args.rounds, args.repeats = 1, 3, 2, 20
    torch.set_num_threads(min(2, torch.get_num_threads()))
    data = load_dataset(parse_config({}).data)
    shape = tuple(data.x_train.shape[1:])
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, int8 engine x86")

    results: dict[str, dict] = {}
    models: dict[str, torch.nn.Module] = {}
    started = time.time()
    for name, compress in VARIANTS.items():
        val, test = [], []
        for seed in range(args.seeds):
            model, costs = train_variant(data, compress, args.epochs, seed)
            val.append(evaluate(model, data, "val"))
            test.append(evaluate(model, data, "test"))
            if seed == 0:
                models[name] = model
        results[name] = {
            "compress": compress,
            **costs,
            "val_accuracy": mean_std(val),
            "test_accuracy": mean_std(test),
            "latency_ms": {},
            "latency_ratio_to_float": {},
        }
        print(
            f"  trained {name:<22} params {costs['params']:>8,}  size {costs['size_mb']:.3f} MB  test acc {mean_std(test)['mean']:.4f}  ({time.time() - started:.0f} s)",
            flush=True,
        )

    # latency: rounds over every variant, so that the machine's drift hits all of them alike
    rounds: dict[tuple[str, str, int], list[float]] = {}
    for r in range(args.rounds):
        for backend in BACKENDS:
            for batch in BATCHES:
                cfg = LatencyConfig(backend=backend, batch_size=batch, threads=1, warmup=10, repeats=args.repeats)
                for name, model in models.items():
                    rounds.setdefault((name, backend, batch), []).append(measure_latency(model, shape, cfg).median_ms)
        print(f"  latency round {r + 1}/{args.rounds} done ({time.time() - started:.0f} s)", flush=True)
    for (name, backend, batch), values in rounds.items():
        key = f"{backend}/batch{batch}"
        float_values = rounds[("float", backend, batch)]
        results[name]["latency_ms"][key] = spread(values)
        results[name]["latency_ratio_to_float"][key] = spread([v / f for v, f in zip(values, float_values)])

    payload = {
        "machine": info,
        "student": STUDENT,
        "dataset": "digits (8x8, 1 channel)",
        "training": f"{args.epochs} epochs, cross-entropy only, AdamW lr 3e-3; pruning after 30% of the epochs (Torch-Pruning, l1), PTQ on 8 training batches (x86 engine)",
        "seeds": args.seeds,
        "latency": f"1 thread, {args.rounds} rounds x {args.repeats} timed runs after 10 warm-up runs; median and range over rounds; ratio to float within each round",
        "variants": results,
    }
    path = write("compress_quick" if args.quick else "compress", payload)  # a smoke run never replaces the real figures
    print(f"\nwrote {path}\n")
    print(table(payload))


def table(payload: dict) -> str:
    rows = [
        "| variant | params | size (MB) | test accuracy | torch b1 (ms) | torchscript b1 (ms) | onnxruntime b1 (ms) | torchscript b32 (ms) | onnxruntime b32 (ms) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in payload["variants"].items():
        cells = [name, f"{r['params']:,}", f"{r['size_mb']:.3f}", f"{r['test_accuracy']['mean']:.4f} ± {r['test_accuracy']['std']:.4f}"]
        for key in ("torch/batch1", "torchscript/batch1", "onnxruntime/batch1", "torchscript/batch32", "onnxruntime/batch32"):
            lat, ratio = r["latency_ms"][key], r["latency_ratio_to_float"][key]
            cells.append(f"{lat['median']:.3f} ({ratio['median']:.2f}×)")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
