"""``search:``, ``latency:``, ``execution:`` and the bounds of ``constraints:``: how the study
runs, what it measures with, and where it writes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ._base import Section
from ._options import LATENCY_BACKENDS, LATENCY_DEVICES, PRUNERS, SAMPLERS


class SearchResources(Section):
    cpu: float = Field(1.0, gt=0)
    """CPUs per trial (also its torch threads)"""
    gpu: float = Field(0.0, ge=0)
    """GPUs per trial; fractions share a GPU"""


class EarlyStoppingConfig(Section):
    grace_period: int = Field(2, ge=1)
    """epochs every trial trains before it can be stopped (the first rung)"""
    reduction_factor: float = Field(3.0, gt=1)
    """eta: rungs at grace_period x eta^k epochs, and the best 1/eta of the trials at a rung go on"""
    min_trials_per_rung: int = Field(3, ge=1)
    """a rung stops nobody until this many trials reached it (pareto); Optuna pruners: trials before pruning starts"""
    percentile: float = Field(25.0, gt=0, lt=100)
    """percentile pruner: stop a trial below this percentile of the others at the same epoch"""


class PrescreenConfig(Section):
    candidates: int = Field(24, ge=2)
    """students sampled at random (seeded by search.seed) and trained briefly before the search"""
    epochs: int = Field(2, ge=1)
    """epochs of each candidate's flash distillation (the trial's own recipe, cut short); their student-epochs count towards search.epoch_budget"""
    keep: int = Field(8, ge=1)
    """the best candidates by non-dominated rank over (quality after the flash epochs, the study's cost objectives) are the search's first trials, in rank order"""


class SearchConfig(Section):
    sampler: Literal[SAMPLERS] = "tpe"  # type: ignore[valid-type]
    """tpe (multivariate, constant liar), nsga2, gp (Gaussian process), or random; all seeded, all but random use the constraints"""
    points_to_evaluate: list[dict[str, Any]] = Field(default_factory=list)
    """configurations tried first, e.g. [{distill.alpha: 0.9, distill.temperature.start: 4.0}]: keys are dimension names (see autodistill validate), unlisted dimensions are sampled"""
    trials: int = Field(20, ge=1)
    """number of finished trials the study aims for"""
    time_budget_s: float | None = Field(None, gt=0)
    """stop starting trials after this many seconds (running ones are stopped too)"""
    epoch_budget: int | None = Field(None, ge=1)
    """stop the search after this many student-epochs, summed over all trials (stopped ones included; running ones are stopped too): equal compute for searches that stop trials early and those that do not"""
    max_concurrent: int = Field(2, ge=1)
    """trials running at once (each takes resources.cpu CPUs)"""
    seed: int = 0
    """seed of the sampler; trial n trains with seed + n"""
    pruner: Literal[PRUNERS] = "none"  # type: ignore[valid-type]
    """early stopping: none; pareto (multi-objective successive halving: a trial is compared with those that cost as little); asha (accuracy only); or an Optuna pruner for single-objective studies: median, percentile, successive_halving, hyperband, wilcoxon"""
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    """rungs of pareto / asha and the settings of the Optuna pruners"""
    report_interval_s: float = Field(1.0, ge=0)
    """with pruner none and no epoch_budget (nothing decides on intermediate results), a trial reports to the driver at most this often, each report carrying every epoch since the last (the curves stay complete); 0 = every epoch (one TensorBoard point per epoch). Each report costs the trial a round trip through the driver (~25 ms)"""
    checkpoint_interval_s: float = Field(10.0, ge=0)
    """a running trial saves what resume needs to continue it (inflight/) after an epoch once this much time has passed since its last save (or its start): an interrupted trial continues from there, at most this much training behind; 0 = after every epoch. Each save costs a small student's trial ~5 ms, a few percent of a 0.1-s epoch"""
    max_failures: int = Field(1, ge=0)
    """times Ray restarts a trial whose worker process died (killed, out of memory, node lost); the restart continues from its last saved epoch (search.checkpoint_interval_s). A trial that raises or diverges is not retried"""
    resources: SearchResources = SearchResources()
    """per trial"""
    prescreen: PrescreenConfig | None = None
    """flash distillation before the search (off by default): many students trained for a few epochs each, the best of them tried first; e.g. {candidates: 24, epochs: 2, keep: 8}"""
    startup_trials: int | None = Field(None, ge=1)
    """how many trials TPE and GP sample before they model the results (Optuna's n_startup_trials; points_to_evaluate count among them); default: a third of the trials expected (of those search.epoch_budget holds at full length, if less), 4 to 10"""
    startup: Literal["random", "spread", "spread_students"] = "random"
    """the sampler's start-up trials (the first search.startup_trials, before TPE or GP model the results): random (the sampler's own); spread: students drawn at random, then picked so that their costs (the first cost objective, known before training; log scale) cover the space evenly from its cheapest student to its dearest, with recipes on a Latin hypercube, tried cheapest and dearest first; or spread_students: the same students, each with one recipe, every recipe dimension at the middle of its range (log scale for log ranges). Trains nothing"""


class LatencyConfig(Section):
    device: Literal[LATENCY_DEVICES] = "cpu"  # type: ignore[valid-type]
    """where latency is measured (cuda: CUDA events after synchronisation)"""
    backend: Literal[LATENCY_BACKENDS] = "torch"  # type: ignore[valid-type]
    """what runs the timed model: torch (eager; an int8 student runs reference arithmetic here, not int8 kernels), torch_compile (inductor; int8 lowered to oneDNN kernels), torchscript (traced and frozen; legacy), onnxruntime (the exported ONNX file, CPU) or executorch (the .pte file with the XNNPACK delegate, CPU); pick the one you deploy with"""
    batch_size: int = Field(1, ge=1)
    """images per timed forward pass (language_modeling: sequences; decoding is timed at batch 1)"""
    threads: int = Field(1, ge=1)
    """torch intra-op threads while timing (1 = a phone / a shared server core)"""
    warmup: int = Field(10, ge=0)
    """untimed runs before timing"""
    repeats: int = Field(30, ge=1)
    """timed runs in a trial; the median is reported"""
    final_repeats: int = Field(200, ge=1)
    """timed runs when the front is re-measured alone at the end of the study"""
    prompt_tokens: int = Field(64, ge=1)
    """language_modeling: the prompt of prefill_ms (one forward pass over it), and the KV cache decode_ms_per_token starts from"""
    decode_tokens: int = Field(16, ge=1)
    """language_modeling: tokens decoded one at a time with the KV cache per timed run of decode_ms_per_token (the mean per token is reported)"""


class ExecutionConfig(Section):
    address: str | None = None
    """Ray cluster address (auto, ray://host:port); None starts a local Ray"""
    storage: str | None = None
    """SQLAlchemy URL of the Optuna storage; default sqlite:///<results>/<name>/study.db"""
    results: str = "results"
    """directory under which the study's folder <name> is created"""
    storage_retry_s: float = Field(120.0, ge=0)
    """how long the driver retries (with backoff) an Optuna storage server it cannot reach (a PostgreSQL restart, a network blip) before it stops the study with one line; sqlite files are not retried"""
    teacher_cache_gb: float = Field(2.0, ge=0)
    """largest cache of the primary teacher's stage outputs (float16, the training set) for feature and attention losses, shared with trials through the Ray object store; bigger -> the teacher runs on every batch instead; 0 = never cache"""
    ray_storage: str | None = None
    """where Ray Tune keeps its experiment and trial checkpoints (its storage_path): a folder every node can write (NFS) or a URI (s3://..., gs://...); default <results>/<name>, right for one machine or a shared filesystem"""


class Bound(Section):
    min: float | None = None
    """the metric must be at least this"""
    max: float | None = None
    """the metric must be at most this"""

    @model_validator(mode="after")
    def _check(self) -> Bound:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) is greater than max ({self.max:g})")
        return self
