"""Latency figures that hold still: the clock-scaled timing of ``autodistill.measure`` against
the plain median of timed runs (what ``time_runs`` did before, and what a hand-written loop does).

    python scripts/bench_latency.py            # ~4 min on a 2-core CPU
    python scripts/bench_latency.py --quick    # a smoke run (~40 s)

Three students of the default study (cnn, resnet, mobilenet on 8x8x1 digits) and one at
32x32x3 (a resnet, the shapes problem of bench_search), seeded weights, batch 1, one thread,
eval mode. Each round is a new process (as each study's driver is: it takes its own clock
reference), which times every network ``--measurements`` times both ways, interleaved: the
plain way (10 warm-up runs, then the median of 30 timed runs) and ours (``time_runs``: the
same runs in blocks, each block scaled by the clock workload timed right after it). Per
network and way: the spread of the measurements (max / min) within each round, and the
spread of the rounds' medians (what two studies started at different moments would record
for the same network). The ratio of the two spreads is taken within each round. Also the
cost: wall time of one measurement, ours over plain, and of taking the reference.

Writes ``results/benchmarks/latency.json`` and prints the README table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _bench import machine, spread, write  # noqa: E402

NETWORKS = {
    "cnn 8x8x1": ("cnn", {"widths": [16, 32], "depths": [2, 1], "width_mult": 0.625}, (1, 8, 10)),
    "resnet 8x8x1": ("resnet", {"widths": [16, 32, 64], "depths": [1, 1, 1], "width_mult": 0.75}, (1, 8, 10)),
    "mobilenet 8x8x1": ("mobilenet", {"widths": [16, 32], "depths": [1, 1], "expand_ratio": 3}, (1, 8, 10)),
    "resnet 32x32x3": ("resnet", {"widths": [16, 32, 64], "depths": [1, 1, 1], "width_mult": 1.0}, (3, 32, 10)),
}


def one_round(measurements: int) -> dict:
    """In this process: each network timed ``measurements`` times both ways, interleaved."""
    from types import SimpleNamespace

    import torch

    from autodistill import measure
    from autodistill.students import build_student, make_spec

    torch.set_num_threads(1)
    started = time.perf_counter()
    reference = measure.clock_reference_ms(1)
    reference_s = time.perf_counter() - started
    nets = {}
    for name, (family, dims, (channels, size, classes)) in NETWORKS.items():
        spec = make_spec(family, dims, SimpleNamespace(in_channels=channels, num_classes=classes, image_size=size))
        model = build_student(spec, seed=0).eval()
        x = torch.randn(1, channels, size, size, generator=torch.Generator().manual_seed(0))
        nets[name] = lambda m=model, x=x: m(x)
    out = {name: {"plain": [], "ours": [], "plain_s": [], "ours_s": []} for name in nets}
    with torch.inference_mode():
        for _ in range(measurements):
            for name, run in nets.items():
                t0 = time.perf_counter()
                for _ in range(10):
                    run()
                plain = []
                for _ in range(30):
                    t1 = time.perf_counter()
                    run()
                    plain.append((time.perf_counter() - t1) * 1e3)
                t2 = time.perf_counter()
                ours = measure.time_runs(run, 10, 30)
                t3 = time.perf_counter()
                out[name]["plain"].append(statistics.median(plain))
                out[name]["ours"].append(statistics.median(ours))
                out[name]["plain_s"].append(t2 - t0)
                out[name]["ours_s"].append(t3 - t2)
    return {"reference_ms": reference, "reference_s": reference_s, "networks": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--measurements", type=int, default=20, help="per network and way, in each round")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--round", action="store_true", help=argparse.SUPPRESS)  # one round, in a child process
    args = parser.parse_args()
    if args.round:
        print(json.dumps(one_round(args.measurements)))
        return
    if args.quick:
        args.rounds, args.measurements = 3, 5
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}")
    rounds = []
    for i in range(args.rounds):
        child = subprocess.run([sys.executable, __file__, "--round", "--measurements", str(args.measurements)], capture_output=True, text=True, check=True)
        rounds.append(json.loads(child.stdout.strip().splitlines()[-1]))
        r = rounds[-1]
        print(f"round {i + 1}/{args.rounds}: reference {r['reference_ms']:.4f} ms (taken in {r['reference_s']:.2f} s)", flush=True)
    per_net = {}
    for name in NETWORKS:
        within = {way: [max(r["networks"][name][way]) / min(r["networks"][name][way]) for r in rounds] for way in ("plain", "ours")}
        medians = {way: [statistics.median(r["networks"][name][way]) for r in rounds] for way in ("plain", "ours")}
        cost = [statistics.median(r["networks"][name]["ours_s"]) / statistics.median(r["networks"][name]["plain_s"]) for r in rounds]
        per_net[name] = {
            "within_round_max_over_min": {way: spread(v) for way, v in within.items()},
            "within_round_spread_ours_over_plain": spread([o / p for o, p in zip(within["ours"], within["plain"], strict=True)]),
            "round_medians_ms": {way: spread(v) for way, v in medians.items()},
            "across_rounds_max_over_min": {way: max(v) / min(v) for way, v in medians.items()},
            "measurement_s": {way: spread([statistics.median(r["networks"][name][f"{way}_s"]) for r in rounds]) for way in ("plain", "ours")},
            "cost_ours_over_plain": spread(cost),
        }
    payload = {
        "machine": info,
        "settings": {"rounds": args.rounds, "measurements": args.measurements, "runs": 30, "warmup": 10, "threads": 1, "batch": 1},
        "reference_ms": spread([r["reference_ms"] for r in rounds]),
        "reference_s": spread([r["reference_s"] for r in rounds]),
        "networks": per_net,
        "rounds": rounds,
    }
    path = write("latency_quick" if args.quick else "latency", payload)
    print(f"\nwrote {path}\n")
    print(
        "| network | within a round, max / min of the measurements: plain | ours | across rounds, max / min of the medians: plain | ours | median (ms): plain | ours | one measurement, ours / plain |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, n in per_net.items():
        w, a, m = n["within_round_max_over_min"], n["across_rounds_max_over_min"], n["round_medians_ms"]
        print(
            f"| {name} | {w['plain']['median']:.2f} ({w['plain']['min']:.2f}-{w['plain']['max']:.2f}) | {w['ours']['median']:.2f} ({w['ours']['min']:.2f}-{w['ours']['max']:.2f}) "
            f"| {a['plain']:.2f} | {a['ours']:.2f} | {m['plain']['median']:.3f} | {m['ours']['median']:.3f} | {n['cost_ours_over_plain']['median']:.2f} |"
        )
    ref = payload["reference_ms"]
    print(
        f"\nclock reference: {ref['median']:.4f} ms ({ref['min']:.4f}-{ref['max']:.4f}) over {args.rounds} processes, taken in {payload['reference_s']['median']:.2f} s"
    )


if __name__ == "__main__":
    main()
