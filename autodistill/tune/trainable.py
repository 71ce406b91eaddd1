"""One trial, run inside a Ray actor: resolve the sampled config, build the student,
distill, measure, checkpoint.

Every epoch reports the validation accuracy and each loss component; the costs known before
training (params, MACs, size) are in every report, so a scheduler can rank by them from the
first rung. A trial that raises or diverges reports ``failed`` with its reason and returns:
the searcher records it as FAIL and the study goes on.

After each epoch but the last, the trial writes everything needed to continue it to
``config["inflight"]`` (atomically). A retry of an interrupted trial gets that file of the
interrupted one as ``config["resume_from"]`` and continues with the next epoch; without the
file (never written, or not on this node's filesystem) it restarts and says so. When Ray
restarts a trial whose worker died (``search.max_failures``), the trial finds its own file and
continues the same way.

Fault injection for tests: ``AUTODISTILL_INJECT_FAULTS="<number>:<kind>,..."`` makes trial
<number> fail after its epoch-2 checkpoint in one of the ways real trials fail: ``raise`` (an
exception), ``nan`` (weights become NaN, so the next epoch's loss does), ``kill`` (the worker
process is SIGKILLed once; a restart continues past it) or ``killall`` (SIGKILLed at every
epoch from 2 on, so restarts run out).
"""

from __future__ import annotations

import math
import os
import signal
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from .. import _io
from ..compress import Compression
from ..config import StudyConfig
from ..constraints import cost_bounds, violations
from ..data import Dataset
from ..distill import evaluate, train
from ..measure import measure_latency, peak_rss_mb, state_dict_mb, static_costs
from ..space import resolve
from ..students import build_student, make_spec
from ..teacher import TeacherTargets, compute_device


def student_spec(trial_cfg: StudyConfig, data: Dataset) -> dict[str, Any]:
    """Everything needed to rebuild the student: family, its resolved dims, input and output sizes."""
    family = trial_cfg.student.family
    return make_spec(family, getattr(trial_cfg.student, family).model_dump(mode="json"), data)


def run_trial(
    config: dict[str, Any],
    *,
    study: StudyConfig,
    data: Dataset,
    teacher: TeacherTargets | None,
) -> None:
    """Ray Tune function trainable. ``config`` = {"number": optuna trial number, "params": {...}}."""
    from ray import tune

    torch.set_num_threads(max(1, int(study.search.resources.cpu)))
    number, params = config["number"], config["params"]
    started = time.perf_counter()
    base: dict[str, Any] = {"number": number, "node": _node()}
    inflight = Path(config["inflight"]) if config.get("inflight") else None
    try:
        trial_cfg = resolve(study, params)
        spec = student_spec(trial_cfg, data)
        seed = study.search.seed + int(config.get("seed_number", number))
        model = build_student(spec, seed=seed)
        input_shape = tuple(data.x_train.shape[1:])
        base.update(static_costs(model, input_shape))
        epochs = trial_cfg.train.epochs
        compression = None
        if trial_cfg.compress.active:
            compression = Compression(trial_cfg.compress, spec, epochs, data, trial_cfg.train.batch_size, model)
        # the pareto scheduler ranks by the cost objectives at each rung: latency is measured
        # before training too (and again after pruning), not only at the end
        rung_latency = study.latency if study.search.pruner == "pareto" and "latency_ms" in study.objectives else None
        if rung_latency is not None:
            base["latency_ms"] = measure_latency(model, input_shape, rung_latency).median_ms
        pruned_costs = _PrunedCosts(compression, input_shape, rung_latency)
        bounds = cost_bounds(study.constraints)
        if bounds and compression is None:  # the costs are final: check them before training
            if "latency_ms" in bounds and "latency_ms" not in base:
                base["latency_ms"] = measure_latency(model, input_shape, study.latency).median_ms
            broken = violations(bounds, base)
            if broken:
                tune.report({**base, "infeasible": True, "fail_reason": f"infeasible before training: {broken}", "trial_s": time.perf_counter() - started})
                return
        resume_state = _resume_state(config)
        if config.get("continues") is not None:
            base["continues"] = int(config["continues"])
            base["resumed_epoch"] = resume_state["epoch"] if resume_state else 0
        # the epochs before the checkpoint it continues from, sent once with the first report (for the curve)
        prior = {"prior_curve": [h["accuracy"] for h in resume_state["history"]]} if resume_state else {}

        fault = _injected_fault(number)
        # Each report waits for the driver. When nothing decides on intermediate results,
        # epochs are reported in batches (at most one report per interval); every report
        # carries the accuracies since the last one, so the curves stay complete.
        interval = study.search.report_interval_s if study.search.pruner == "none" and not study.search.epoch_budget else 0.0
        unreported: list[float] = []
        last_report = time.perf_counter()

        def report_epoch(stats) -> None:
            nonlocal last_report
            if fault:
                _inject(fault, stats.epoch, model)
            base.update(pruned_costs())  # params, MACs, size of the network as it is now
            unreported.append(stats.accuracy)
            if stats.epoch < epochs and time.perf_counter() - last_report >= interval:  # the last epoch is reported below, with the checkpoint
                tune.report({**base, **stats.as_dict(), "epochs": epochs, "curve_tail": list(unreported), **prior})
                prior.clear()
                unreported.clear()
                last_report = time.perf_counter()

        history = train(
            model,
            data,
            trial_cfg.train,
            trial_cfg.distill,
            teacher,
            seed=seed,
            on_epoch=report_epoch,
            on_checkpoint=(lambda state: _io.torch_save(inflight, state)) if inflight is not None else None,
            resume=resume_state,
            compression=compression,
            augment=trial_cfg.augment,
            device=trial_device(study, compression),
        )
        model.to("cpu", memory_format=torch.contiguous_format)
        train_s = time.perf_counter() - started
        final_stats = history[-1].as_dict()
        final_stats["steps_s"] = sum(h.steps_s for h in history if h.epoch > int(base.get("resumed_epoch", 0) or 0))
        if compression is not None:
            base.update(pruned_costs())
            model = compression.finish()
            spec = compression.compressed_spec()
            if compression.quantized:  # accuracy and size are the int8 network's
                base["size_mb"] = state_dict_mb(model)
                final_stats["accuracy_float"] = final_stats["accuracy"]
                final_stats["accuracy"] = evaluate(model, data, "val")
        latency = measure_latency(model, input_shape, study.latency)
        final = {
            **base,
            **final_stats,
            "epochs": epochs,
            "test_accuracy": evaluate(model, data, "test"),
            "latency_ms": latency.median_ms,
            "train_s": train_s,
            "trial_s": time.perf_counter() - started,
            "worker_rss_mb": peak_rss_mb(),
            "finished": True,
            "curve_tail": list(unreported),
            **prior,
        }
        if not all(math.isfinite(final[k]) for k in ("accuracy", "params", "latency_ms")):
            raise FloatingPointError(f"non-finite metrics: accuracy={final['accuracy']}, latency={final['latency_ms']}")
        with tempfile.TemporaryDirectory(prefix="autodistill-ckpt-") as tmp:
            _io.torch_save(Path(tmp) / "student.pt", model.state_dict())
            _io.write_json(Path(tmp) / "spec.json", {"spec": spec, "number": number, "params": params, "seed_number": config.get("seed_number", number)})
            _io.write_json(Path(tmp) / "metrics.json", {"final": final, "history": [h.as_dict() for h in history]})
            tune.report(final, checkpoint=tune.Checkpoint.from_directory(tmp))
    except Exception as err:  # recorded as a failed trial with its reason; the study goes on
        reason = f"{type(err).__name__}: {err}".strip()
        tune.report(
            {
                **base,
                "failed": True,
                "fail_reason": reason[:1000],
                "fail_traceback": "".join(traceback.format_exc(limit=-8))[-4000:],
                "trial_s": time.perf_counter() - started,
            }
        )


class _PrunedCosts:
    """params, MACs and size (and latency, with ``latency``) of a pruned student, computed
    again only after it changed."""

    def __init__(self, compression: Compression | None, input_shape: tuple[int, ...], latency=None):
        self.compression, self.input_shape, self.latency = compression, input_shape, latency
        self.layers: dict | None = None
        self.costs: dict[str, float] = {}

    def __call__(self) -> dict[str, float]:
        c = self.compression
        if c is not None and c.layers and c.layers is not self.layers:
            pruned = c.float_model()
            self.layers, self.costs = c.layers, static_costs(pruned, self.input_shape)
            if self.latency is not None:
                self.costs["latency_ms"] = measure_latency(pruned, self.input_shape, self.latency).median_ms
        return self.costs


def trial_device(study: StudyConfig, compression: Compression | None = None) -> str:
    """CUDA for a trial given GPUs (``search.resources.gpu``), except a compressed student
    (pruning and int8 run on the CPU); else the CPU."""
    return "cpu" if compression is not None else compute_device(study)


def _resume_state(config: dict[str, Any]) -> dict | None:
    """The last epoch checkpoint to continue from: the trial's own (Ray restarted it after
    its worker died) or the interrupted trial's it continues. ``None`` means the trial starts
    from epoch 1 (the file was never written, is on another node, or is unreadable:
    restarting is always correct)."""
    own = config.get("inflight")
    source = own if own and Path(own).is_file() else config.get("resume_from")
    if not source:
        return None
    try:
        return torch.load(source, weights_only=True)
    except Exception:
        return None


def _injected_fault(number: int) -> str | None:
    spec = os.environ.get("AUTODISTILL_INJECT_FAULTS", "")
    faults = dict(item.split(":", 1) for item in spec.split(",") if ":" in item)
    return faults.get(str(number))


def _inject(kind: str, epoch: int, model: torch.nn.Module) -> None:
    if kind == "killall" and epoch >= 2 or kind == "kill" and epoch == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    if epoch != 2:
        return
    if kind == "raise":
        raise RuntimeError("injected fault (AUTODISTILL_INJECT_FAULTS)")
    if kind == "nan":
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float("nan"))


def _node() -> str:
    """The Ray node this trial runs on (its id), or the host name outside Ray."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:
        import socket

        return socket.gethostname()
