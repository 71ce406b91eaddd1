"""Training throughput on a CUDA GPU at CIFAR scale: a trial run by autodistill vs a plain
PyTorch loop, and four trials sharing the GPU (fractional GPUs).

    python scripts/bench_gpu.py            # needs a CUDA GPU; ~5 min on one
    python scripts/bench_gpu.py --smoke    # the same code on the CPU, 2,000 images (no figures)

Data: 50,000 synthetic 32x32x3 training images written in CIFAR-10's real on-disk format
(pickle batches) and loaded through ``dataset: cifar10`` (the md5 check is skipped in this
process: the files cannot match torchvision's list). Student: ResNet widths [16, 32, 64],
depths [1, 1, 1]; batch 128; KD (T = 4, alpha = 0.5) from the cached outputs of a small
ResNet teacher trained for one epoch; bf16 autocast and channels_last on the GPU.

(a) plain loop: the student, AdamW, the same loss, the data resident on the GPU, nothing else;
(b) one trial: ``autodistill`` (``run_study``, Ray Tune, ``resources.gpu: 1``);
(c) four trials at once, ``resources.gpu: 0.25`` each.

Images per second inside the training steps, the median over epochs after the first; (b) / (a)
(target >= 0.9) and (c)'s sum over its trials / (a); GPU utilisation (nvidia-smi, sampled every
0.2 s) and peak memory. Writes ``results/benchmarks/gpu.json``.
"""

from __future__ import annotations

import argparse
import json
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _bench import machine, write  # noqa: E402

STUDENT = {"widths": [16, 32, 64], "depths": [1, 1, 1]}
TEACHER = {"family": "resnet", "widths": [32, 64, 128], "depths": [1, 1, 1]}


def write_cifar(root: Path, n_train: int, n_test: int) -> None:
    """``n_train`` + ``n_test`` random images as CIFAR-10's pickle batches under ``root``."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    per = n_train // 5
    for name, n in [*((f"data_batch_{i}", per) for i in range(1, 6)), ("test_batch", n_test)]:
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": [int(v) for v in rng.integers(0, 10, n)]}
        with open(base / name, "wb") as fh:
            pickle.dump(batch, fh)
    with open(base / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, fh)


class GpuMonitor:
    """Samples nvidia-smi's utilisation and memory every 0.2 s while the ``with`` block runs."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and shutil.which("nvidia-smi") is not None
        self.util: list[float] = []
        self.memory_mb: list[float] = []
        self._stop = threading.Event()

    def __enter__(self):
        if self.enabled:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self.enabled:
            self._thread.join()

    def _run(self) -> None:
        query = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits", "-i", "0"]
        while not self._stop.is_set():
            out = subprocess.run(query, capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip():
                util, mem = out.stdout.strip().splitlines()[0].split(",")
                self.util.append(float(util))
                self.memory_mb.append(float(mem))
            self._stop.wait(0.2)

    def summary(self) -> dict:
        if not self.util:
            return {"utilisation_pct_mean": None, "memory_used_mb_peak": None}
        return {
            "utilisation_pct_mean": statistics.fmean(self.util),
            "utilisation_pct_median": statistics.median(self.util),
            "memory_used_mb_peak": max(self.memory_mb),
        }


def study_config(root: Path, results: Path, epochs: int, trials: int, gpu: float):
    from autodistill import parse_config

    return parse_config(
        {
            "name": f"gpu-{trials}",
            "data": {"dataset": "cifar10", "root": str(root), "val_fraction": 0.02},
            "teacher": {"arch": TEACHER, "train": {"epochs": 1, "batch_size": 256}},
            "student": {"family": "resnet", "resnet": STUDENT},
            "distill": {"alpha": {"low": 0.49, "high": 0.51}, "temperature": {"schedule": "constant", "start": 4.0}},
            "train": {"epochs": epochs, "batch_size": 128, "lr": 3e-3, "optimizer": "adamw"},
            "objectives": {"accuracy": "max", "params": "min"},
            "search": {"trials": trials, "max_concurrent": trials, "seed": 0, "resources": {"cpu": 1, "gpu": gpu}},
            "latency": {"warmup": 1, "repeats": 3, "final_repeats": 3},
            "execution": {"results": str(results)},
        }
    )


def plain_loop(config, device: str) -> dict:
    """The plain PyTorch loop: the same student, loss, batch size and data, nothing else."""
    import torch.nn.functional as F

    from autodistill.data import load_dataset
    from autodistill.students import build_student, make_spec
    from autodistill.tasks import get_task

    task = get_task(config.task)
    data = load_dataset(config.data)
    teachers = task.prepare_teachers(config, data, log=lambda m: None)
    targets = task.teacher_targets(config, data, teachers, log=lambda m: None)
    logits = targets.logits.float().to(device) if targets.logits.ndim == 2 else targets.logits[0].float().to(device)
    model = build_student(make_spec("resnet", STUDENT, data), seed=0).to(device)
    cuda = device == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
        torch.cuda.reset_peak_memory_stats()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x, y = data.x_train.to(device), data.y_train.to(device)
    n, T, alpha = len(y), 4.0, 0.5
    rates = []
    for _ in range(config.train.epochs):
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        for idx in torch.randperm(n, device=device).split(128):
            xb = data.normalize(x[idx])
            if cuda:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False):
                out = model(xb)
            out = out.float()
            kd = F.kl_div(F.log_softmax(out / T, -1), F.log_softmax(logits[idx] / T, -1), reduction="batchmean", log_target=True) * T * T
            loss = alpha * kd + (1 - alpha) * F.cross_entropy(out, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if cuda:
            torch.cuda.synchronize()
        rates.append(n / (time.perf_counter() - started))
    return {
        "images_per_s": statistics.median(rates[1:] or rates),
        "epoch_images_per_s": rates,
        "peak_memory_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
    }


def study_rates(config) -> dict:
    """Run the study through autodistill's API; images/s inside each trial's training steps."""
    from autodistill import run_study

    started = time.perf_counter()
    result = run_study(config, log=lambda m: None)
    wall = time.perf_counter() - started
    results = result.results_dir
    done = result.trials[result.trials["state"] == "COMPLETE"]
    if len(done) != config.search.trials:
        raise SystemExit(f"{len(done)} of {config.search.trials} trials completed:\n{result.trials[['number', 'state', 'fail_reason']]}")
    per_trial = []
    for number in done["number"]:
        history = json.loads((results / "trials" / f"{int(number):04d}" / "metrics.json").read_text())["history"]
        per_trial.append([h["steps_s"] for h in history])
    n_train = _n_train(config)
    trial_rates = [statistics.median([n_train / s for s in steps[1:] or steps]) for steps in per_trial]
    images = n_train * config.train.epochs * len(per_trial)
    return {
        "trials": len(per_trial),
        "images_per_s_per_trial": trial_rates,
        "images_per_s_sum": sum(trial_rates),
        "images_per_s_whole_search": images / result.summary["search_s"],
        "search_s": result.summary["search_s"],
        "wall_s": wall,
    }


def _n_train(config) -> int:
    from autodistill.data import load_dataset

    return len(load_dataset(config.data).y_train)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="run the same code on the CPU with 2,000 images (checks the script; no figures)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        print("bench_gpu: no CUDA GPU here (torch.cuda.is_available() is False): nothing measured", file=sys.stderr)
        raise SystemExit(2)
    import torchvision.datasets.cifar as tv_cifar

    tv_cifar.check_integrity = lambda path, md5=None: True  # synthetic files in the real format
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-gpu-"))
    n_train, epochs = (2000, 2) if args.smoke else (50000, args.epochs)
    write_cifar(work / "data", n_train, 1000 if args.smoke else 10000)
    gpu = 1.0 if cuda else 0.0
    device = "cuda" if cuda else "cpu"
    print(f"machine: {machine()}", flush=True)
    one = study_config(work / "data", work / "results", epochs, 1, gpu)
    with GpuMonitor(cuda) as mon:
        plain = plain_loop(one, device)
    plain["gpu"] = mon.summary()
    print(f"(a) plain loop: {plain['images_per_s']:,.0f} images/s", flush=True)
    with GpuMonitor(cuda) as mon:
        single = study_rates(one)
    single["gpu"] = mon.summary()
    print(f"(b) one trial: {single['images_per_s_sum']:,.0f} images/s ({single['images_per_s_sum'] / plain['images_per_s']:.2f} of the plain loop)", flush=True)
    four = study_config(work / "data", work / "results", epochs, 4, gpu / 4 if cuda else 0.0)
    with GpuMonitor(cuda) as mon:
        shared = study_rates(four)
    shared["gpu"] = mon.summary()
    print(
        f"(c) four trials sharing the GPU: {shared['images_per_s_sum']:,.0f} images/s in all ({shared['images_per_s_sum'] / plain['images_per_s']:.2f} of the plain loop)",
        flush=True,
    )
    payload = {
        "smoke": args.smoke,
        "machine": machine(),
        "workload": {"images": n_train, "epochs": epochs, "batch_size": 128, "student": {"family": "resnet", **STUDENT}, "teacher": TEACHER},
        "plain_loop": plain,
        "one_trial": single,
        "four_trials": shared,
        "ratios": {
            "one_trial / plain": single["images_per_s_sum"] / plain["images_per_s"],
            "four_trials / plain": shared["images_per_s_sum"] / plain["images_per_s"],
        },
        "target": "one_trial / plain >= 0.9",
    }
    path = write("gpu_smoke" if args.smoke else "gpu", payload)
    print(f"wrote {path}")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
