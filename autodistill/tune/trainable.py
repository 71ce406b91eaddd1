"""One trial, run inside a Ray actor: resolve the sampled config, hand it to the study's task
(:meth:`autodistill.tasks.Task.start_trial` builds the student, trains and measures it),
report every epoch, checkpoint.

Every epoch reports the validation accuracy and each loss component; the costs known before
training (params, MACs, size) are in every report, so a scheduler can rank by them from the
first rung. A trial that raises or diverges reports ``failed`` with its reason and returns:
the searcher records it as FAIL and the study goes on.

After an epoch but the last, once ``search.checkpoint_interval_s`` has passed since its last
save, the trial writes everything needed to continue it to ``config["inflight"]``
(atomically). A retry of an interrupted trial gets that file of the interrupted one as
``config["resume_from"]`` and continues with the epoch after it; without the file (never
written, or not on this node's filesystem) it restarts and says so. When Ray
restarts a trial whose worker died (``search.max_failures``), the trial finds its own file and
continues the same way.

Fault injection for tests: ``AUTODISTILL_INJECT_FAULTS="<number>:<kind>,..."`` makes trial
<number> fail after its epoch-2 checkpoint in one of the ways real trials fail: ``raise`` (an
exception), ``nan`` (weights become NaN, so the next epoch's loss does), ``kill`` (the worker
process is SIGKILLed once; a restart continues past it) or ``killall`` (SIGKILLed at every
epoch from 2 on, so restarts run out). ``slow`` adds :data:`SLOW_EPOCH_S` to every epoch (a
test that interrupts trials mid-way needs them to last on a fast machine too); ``*`` for
<number> injects into every trial.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .. import _io, layout
from .._errors import CheckpointError, DiskFull
from ..checkpoints import load_train_state
from ..config import StudyConfig
from ..constraints import cost_bounds, violations
from ..distill import EpochStats
from ..measure import peak_rss_mb, set_clock_reference
from ..space import resolve
from ..tasks import Task, TrialResult, TrialRun, get_task


def run_trial(config: dict[str, Any], *, study: StudyConfig, data: Any, teacher: Any, clock_ms: float | None = None) -> None:
    """Ray Tune function trainable. ``config`` = {"number": optuna trial number, "params": {...}}
    (plus ``inflight``, ``resume_from``, ``continues``, ``seed_number`` from the searcher);
    ``data`` and ``teacher`` are the task's data and cached teacher outputs; ``clock_ms`` the
    study's latency clock reference (its latency figures are all in one unit)."""
    from ray import tune

    torch.set_num_threads(max(1, int(study.search.resources.cpu)))
    if clock_ms is not None:
        set_clock_reference(study.latency.threads, clock_ms)
    sweep_stale_checkpoints()
    number, params = config["number"], config["params"]
    started = time.perf_counter()
    base: dict[str, Any] = {"number": number, "node": _node(), "worker_pid": os.getpid()}  # which process ran it: reused actors show as few
    try:
        task = get_task(study.task)
        seed = study.search.seed + int(config.get("seed_number", number))
        run = task.start_trial(resolve(study, params), study, data, teacher, seed)
        base.update(run.costs())
        if task.latency_at_rungs(study):
            base.update(run.latency())  # the pareto scheduler ranks by the cost objectives from the first rung on
        broken = _broken_before_training(study, task, run, base)
        if broken:
            tune.report({**base, "infeasible": True, "fail_reason": f"infeasible before training: {broken}", "trial_s": time.perf_counter() - started})
            return
        final, result, history = _train_and_measure(config, study, task, run, base, started)
        with tempfile.TemporaryDirectory(prefix=f"{CKPT_PREFIX}{os.getpid()}-") as tmp:  # Ray copies it into the study's storage
            _io.torch_save(Path(tmp) / layout.STUDENT, result.model.state_dict(), durable=False)
            spec = {"spec": result.spec, "number": number, "params": params, "seed_number": config.get("seed_number", number)}
            _io.write_json(Path(tmp) / layout.SPEC, spec, durable=False)
            _io.write_json(Path(tmp) / layout.METRICS, {"final": final, "history": [h.as_dict() for h in history]}, durable=False)
            tune.report(final, checkpoint=tune.Checkpoint.from_directory(tmp))
    except DiskFull as err:  # not the trial's fault: the searcher records it as interrupted and stops the study
        tune.report({**base, "failed": True, "disk_full": True, "fail_reason": str(err), "trial_s": time.perf_counter() - started})
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


CKPT_PREFIX = "autodistill-ckpt-"
"""a trial's final checkpoint is written to ``<tmp>/autodistill-ckpt-<pid>-<random>/`` and
handed to Ray, which copies it into the study's storage; the folder goes when the report
returns"""

STALE_CKPT_S = 60.0
"""how old the folder of a process that no longer runs must be before it is swept"""


def sweep_stale_checkpoints(tmp: str | os.PathLike | None = None) -> int:
    """Remove the final-checkpoint folders (:data:`CKPT_PREFIX`) that a worker killed between
    writing one and Ray's copy left in this machine's temporary directory: those whose process
    is gone, older than :data:`STALE_CKPT_S` (a process of another PID namespace that shares
    ``/tmp`` is not seen by ``kill(pid, 0)``; its folder lives for seconds). Called when a trial
    starts and when a study ends; returns how many were removed."""
    root = Path(tmp or tempfile.gettempdir())
    removed = 0
    now = time.time()
    for path in root.glob(f"{CKPT_PREFIX}*"):
        pid = path.name[len(CKPT_PREFIX) :].split("-", 1)[0]
        try:
            if not pid.isdigit() or _running(int(pid)) or now - path.stat().st_mtime < STALE_CKPT_S:
                continue
        except OSError:  # swept by another worker meanwhile
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed += not path.exists()
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _broken_before_training(study: StudyConfig, task: Task, run: TrialRun, base: dict[str, Any]) -> str:
    """Which constraints the student's costs break, when they are final before training
    (no compression to change them); '' when none or not yet known."""
    bounds = cost_bounds(study.constraints)
    if not bounds or not run.costs_final:
        return ""
    if any(m in bounds and m not in base for m in task.latency_metrics):
        base.update(run.latency())
    return violations(bounds, base)


def _train_and_measure(
    config: dict[str, Any], study: StudyConfig, task: Task, run: TrialRun, base: dict[str, Any], started: float
) -> tuple[dict[str, Any], TrialResult, list[EpochStats]]:
    """Train the trial (continuing from a checkpoint when it has one), reporting its epochs,
    then measure the finished student: (the final report, the student to save, the per-epoch
    statistics)."""
    from ray import tune

    number = config["number"]
    inflight = Path(config["inflight"]) if config.get("inflight") else None
    resume_state = _resume_state(config)
    if resume_state is not None and inflight is not None and inflight.is_file():
        # its own checkpoint: Ray restarted this trial after its worker died (killed, node lost)
        base["restarted_from_epoch"] = resume_state["epoch"]
    if config.get("continues") is not None:
        base["continues"] = int(config["continues"])
        base["resumed_epoch"] = resume_state["epoch"] if resume_state else 0
    # the epochs before the checkpoint it continues from, sent once with the first report (for the curve)
    prior = {"prior_curve": [h[task.quality] for h in resume_state["history"]]} if resume_state else {}
    epochs = run.epochs
    fault = _injected_fault(number)
    # Each report waits for the driver. When nothing decides on intermediate results,
    # epochs are reported in batches (at most one report per interval); every report
    # carries the quality metric of every epoch since the last one, so the curves stay complete.
    interval = study.search.report_interval_s if study.search.pruner == "none" and not study.search.epoch_budget else 0.0
    unreported: list[float] = []
    last_report = time.perf_counter()

    def report_epoch(stats) -> None:
        nonlocal last_report
        if fault:
            _inject(fault, stats.epoch, run.model)
        base.update(run.costs())  # params, MACs, size of the network as it is now
        unreported.append(stats.as_dict()[task.quality])
        if stats.epoch < epochs and time.perf_counter() - last_report >= interval:  # the last epoch is reported below, with the checkpoint
            tune.report({**base, **stats.as_dict(), "epochs": epochs, "curve_tail": list(unreported), **prior})
            prior.clear()
            unreported.clear()
            last_report = time.perf_counter()

    on_checkpoint = _checkpointer(inflight, study.search.checkpoint_interval_s) if inflight is not None else None
    base["first_step_at"] = time.time()  # wall clock: how long after the command the training began
    history = run.train(report_epoch, on_checkpoint, resume_state)
    train_s = time.perf_counter() - started
    final_stats = history[-1].as_dict()
    final_stats["steps_s"] = sum(h.steps_s for h in history if h.epoch > int(base.get("resumed_epoch", 0) or 0))
    result = run.finish(history)
    final = {
        **base,
        **final_stats,
        **result.metrics,
        "epochs": epochs,
        "train_s": train_s,
        "trial_s": time.perf_counter() - started,
        "worker_rss_mb": peak_rss_mb(),
        "finished": True,
        "curve_tail": list(unreported),
        **prior,
    }
    checked = dict.fromkeys([task.quality, *task.latency_metrics, *study.objectives])
    if not all(math.isfinite(final[k]) for k in checked):
        raise FloatingPointError("non-finite metrics: " + ", ".join(f"{k}={final[k]}" for k in checked))
    return final, result, history


def _checkpointer(inflight: Path, interval_s: float) -> Callable[[dict], None]:
    """What saves a trial's state after an epoch to ``inflight``: once ``interval_s`` has
    passed since the last save (or since training began), so that a trial of short epochs
    does not spend a few percent of its time on saves that only a crash would use. The file
    survives the worker's death, the only thing it is for (no fsync: after a power cut
    resume restarts the trial)."""
    last = time.perf_counter()

    def save(state: dict) -> None:
        nonlocal last
        if time.perf_counter() - last >= interval_s:
            _io.torch_save(inflight, state, durable=False)
            last = time.perf_counter()

    return save


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
        return load_train_state(source)
    except CheckpointError:
        return None


def _injected_fault(number: int) -> str | None:
    spec = os.environ.get("AUTODISTILL_INJECT_FAULTS", "")
    faults = dict(item.split(":", 1) for item in spec.split(",") if ":" in item)
    return faults.get(str(number), faults.get("*"))


SLOW_EPOCH_S = 0.1
"""what the ``slow`` fault adds to each epoch"""


def _inject(kind: str, epoch: int, model: torch.nn.Module) -> None:
    if kind == "slow":
        time.sleep(SLOW_EPOCH_S)
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
        return socket.gethostname()
