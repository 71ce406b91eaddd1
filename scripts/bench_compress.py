"""Compression benchmark: one student, float vs pruned (0.3, 0.5) vs int8 (PT2E: x86,
onnxruntime (also with 8-bit weights) and xnnpack quantizers) vs pruned + int8, timed in
every latency backend that runs it.

Pruned 0.3 appears twice: with the exact channel counts (32 -> 22, 128 -> 89) and with
``round_to: 8`` (24, 88), because odd channel counts can make ONNX Runtime's kernels slower
than the unpruned network's.

    python scripts/bench_compress.py            # ~6 min on a 2-core CPU
    python scripts/bench_compress.py --quick    # a smoke run

Each variant is trained on digits exactly as a trial trains it (same loop, pruning after 30%
of the epochs, then fine-tuning; PTQ calibrated on 8 training batches), with cross-entropy
only, so that the numbers are about compression and not about the teacher. Reported per
variant: params, MACs, state-dict size, validation and test accuracy (mean and std over
seeds; the test accuracy also of the ONNX file in ONNX Runtime), and latency at batch 1 and 32 on one thread for each latency backend. Latency is
measured in rounds that visit every variant in turn; the ratio to float is taken within each
round, and the median and range over rounds are reported. Writes
``results/benchmarks/compress.json`` and prints the README table.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from _bench import machine, mean_std, spread, write  # noqa: E402

from autodistill._onnx import ort_session, save_onnx  # noqa: E402
from autodistill.compress import Compression  # noqa: E402
from autodistill.config import LatencyConfig, parse_config  # noqa: E402
from autodistill.data import load_dataset  # noqa: E402
from autodistill.distill import evaluate, train  # noqa: E402
from autodistill.measure import latency_runner, state_dict_mb, static_costs, threads, time_runs  # noqa: E402
from autodistill.students import build_student, make_spec  # noqa: E402

STUDENT = {"family": "resnet", "widths": [32, 64, 128], "depths": [1, 1, 1]}
VARIANTS = {
    "float": {},
    "pruned 0.3": {"prune_rate": 0.3},
    "pruned 0.3, round_to 8": {"prune_rate": 0.3, "round_to": 8},
    "pruned 0.5": {"prune_rate": 0.5},
    "int8 (PTQ, x86)": {"quantize": "ptq", "engine": "x86"},
    "int8 (PTQ, onnxruntime)": {"quantize": "ptq", "engine": "onnxruntime"},
    "int8 (PTQ, onnxruntime, 8-bit weights)": {"quantize": "ptq", "engine": "onnxruntime", "reduce_range": False},
    "int8 (PTQ, xnnpack)": {"quantize": "ptq", "engine": "xnnpack"},
    "pruned 0.5 + int8 (onnxruntime)": {"prune_rate": 0.5, "quantize": "ptq", "engine": "onnxruntime"},
    "pruned 0.5 + int8 (xnnpack)": {"prune_rate": 0.5, "quantize": "ptq", "engine": "xnnpack"},
}
BACKENDS = ("torch", "torch_compile", "torchscript", "onnxruntime", "executorch")
BATCHES = (1, 32)
KEPT_OPEN = ("onnxruntime", "executorch")  # exported / lowered once per variant and batch; torch.compile again each time (see measure._compiled)


def runs_in(compress: dict, backend: str) -> bool:
    """Whether ``backend`` runs this variant's int8 kernels (autodistill refuses the others)."""
    if compress.get("quantize", "none") == "none":
        return True
    engine = compress["engine"]
    return {"executorch": engine == "xnnpack", "torch_compile": engine == "x86"}.get(backend, True)


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
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, torchao {info.get('torchao')}, executorch {info.get('executorch')}")

    results: dict[str, dict] = {}
    models: dict[str, torch.nn.Module] = {}
    started = time.time()
    for name, compress in VARIANTS.items():
        val, test, in_ort = [], [], []
        for seed in range(args.seeds):
            model, costs = train_variant(data, compress, args.epochs, seed)
            val.append(evaluate(model, data, "val"))
            test.append(evaluate(model, data, "test"))
            in_ort.append(onnxruntime_accuracy(model, data))
            if seed == 0:
                models[name] = model
        results[name] = {
            "compress": compress,
            **costs,
            "val_accuracy": mean_std(val),
            "test_accuracy": mean_std(test),
            "onnxruntime_test_accuracy": mean_std(in_ort),
            "latency_ms": {},
            "latency_ratio_to_float": {},
        }
        print(
            f"  trained {name:<22} params {costs['params']:>8,}  size {costs['size_mb']:.3f} MB  test acc {mean_std(test)['mean']:.4f}  ({time.time() - started:.0f} s)",
            flush=True,
        )

    rounds = time_rounds(models, shape, args, started)
    for (name, backend, batch), values in rounds.items():
        key = f"{backend}/batch{batch}"
        float_values = rounds[("float", backend, batch)]
        results[name]["latency_ms"][key] = spread(values)
        results[name]["latency_ratio_to_float"][key] = spread([v / f for v, f in zip(values, float_values)])

    payload = {
        "machine": info,
        "student": STUDENT,
        "dataset": "digits (8x8, 1 channel)",
        "training": f"{args.epochs} epochs, cross-entropy only, AdamW lr 3e-3; pruning after 30% of the epochs (Torch-Pruning, l1), PTQ (PT2E, torchao) on 8 training batches with the quantizer the variant names",
        "seeds": args.seeds,
        "latency": f"1 thread (ONNX Runtime and ExecuTorch's pool too), {args.rounds} rounds x {args.repeats} timed runs after 10 warm-up runs; median and range over rounds; ratio to float within each round; n/a where the backend does not run the variant's int8 kernels",
        "variants": results,
    }
    path = write("compress_quick" if args.quick else "compress", payload)  # a smoke run never replaces the real figures
    print(f"\nwrote {path}\n")
    print(table(payload))


def onnxruntime_accuracy(model: torch.nn.Module, data) -> float:
    """Test accuracy of the model's ONNX file in ONNX Runtime on this CPU: for an int8
    network, ONNX Runtime's own int8 kernels (which saturate with 8-bit weights on an x86
    CPU without VNNI: ``compress.reduce_range``)."""
    x = data.normalize(data.x_test)
    with tempfile.TemporaryDirectory() as tmp:
        save_onnx(model.eval(), x[:2], Path(tmp) / "m.onnx")
        logits = ort_session(Path(tmp) / "m.onnx").run(["logits"], {"input": x.numpy()})[0]
    return float((logits.argmax(1) == data.y_test.numpy()).mean())


def time_rounds(models: dict, shape: tuple[int, ...], args, started: float) -> dict[tuple[str, str, int], list[float]]:
    """Latency in rounds over every variant, so that the machine's drift hits all of them
    alike: per round and (backend, batch), the median of ``args.repeats`` runs of each variant."""
    rounds: dict[tuple[str, str, int], list[float]] = {}
    with contextlib.ExitStack() as stack, threads(1):
        runners = {}
        for backend in KEPT_OPEN:
            for batch in BATCHES:
                cfg = LatencyConfig(backend=backend, batch_size=batch, threads=1)
                for name, model in models.items():
                    if runs_in(VARIANTS[name], backend):
                        runners[(name, backend, batch)] = stack.enter_context(latency_runner(model, shape, cfg))
        for r in range(args.rounds):
            for backend in BACKENDS:
                for batch in BATCHES:
                    for name, model in models.items():
                        if not runs_in(VARIANTS[name], backend):
                            continue
                        key = (name, backend, batch)
                        times = _timed(runners.get(key), model, shape, backend, batch, args.repeats)
                        rounds.setdefault(key, []).append(statistics.median(times))
            print(f"  latency round {r + 1}/{args.rounds} done ({time.time() - started:.0f} s)", flush=True)
    return rounds


def _timed(runner, model, shape, backend: str, batch: int, repeats: int) -> list[float]:
    if runner is not None:
        return time_runs(runner, 10, repeats)
    with latency_runner(model, shape, LatencyConfig(backend=backend, batch_size=batch, threads=1)) as run:
        return time_runs(run, 10, repeats)


TABLE_COLUMNS = (
    "torch/batch1",
    "torch_compile/batch1",
    "torchscript/batch1",
    "onnxruntime/batch1",
    "executorch/batch1",
    "torch_compile/batch32",
    "onnxruntime/batch32",
    "executorch/batch32",
)


def table(payload: dict) -> str:
    heads = [f"{key.split('/')[0]} b{key.split('batch')[1]} (ms)" for key in TABLE_COLUMNS]
    rows = ["| variant | params | size (MB) | test accuracy | in ONNX Runtime | " + " | ".join(heads) + " |", "|---" * (5 + len(heads)) + "|"]
    for name, r in payload["variants"].items():
        cells = [name, f"{r['params']:,}", f"{r['size_mb']:.3f}"]
        cells += [f"{a['mean']:.4f} ± {a['std']:.4f}" if a else "-" for a in (r["test_accuracy"], r.get("onnxruntime_test_accuracy"))]
        for key in TABLE_COLUMNS:
            lat, ratio = r["latency_ms"].get(key), r["latency_ratio_to_float"].get(key)
            cells.append(f"{lat['median']:.3f} ({ratio['median']:.2f}×)" if lat else "n/a")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
