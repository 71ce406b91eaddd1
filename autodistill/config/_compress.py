"""``compress:``: structural pruning and INT8 quantization of the student."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, model_validator

from .._tunable import fixed_only, is_distribution, tunable
from ._base import Section, choices
from ._options import NNI_IMPORTANCES, PRUNE_BACKENDS, PRUNE_IMPORTANCES, QUANT_ENGINES, QUANTIZE


def _auto_or_bool(raw):
    if raw != "auto" and not isinstance(raw, bool):
        raise ValueError(f"expected auto, true or false, got {raw!r}")
    return raw


class CompressConfig(Section):
    """Structural pruning (channels really removed, with Torch-Pruning) and INT8 quantization
    of the student, inside the trial: its accuracy and costs are those of the compressed model."""

    prune_rate: tunable("float", ge=0, le=0.9) = 0.0
    """share of the output channels removed from each prunable layer (0 = no pruning); the classifier's outputs are kept"""
    prune_stage_rates: list[tunable("float", ge=0, le=0.9)] | None = None
    """per-stage rates (one per student stage) that replace prune_rate inside each stage; the stem follows prune_rate"""
    prune_global: tunable("bool") = False
    """rank channels across all layers at once (layers lose different shares) instead of prune_rate in every layer"""
    importance: tunable("str", choices=PRUNE_IMPORTANCES) = "l1"
    """how channels are ranked: l1 / l2 weight norm, fpgm (geometric median), taylor (weight x gradient on a few training batches), bn_scale (BatchNorm gamma), random"""
    prune_at: tunable("float", ge=0, lt=1) = 0.3
    """share of the epochs trained before the first pruning step (0 = prune at initialisation); the remaining epochs fine-tune with the trial's losses"""
    prune_steps: tunable("int", ge=1, le=50) = 1
    """prune in this many steps, one per epoch, each removing an equal share; the schedule is moved earlier if needed so that at least one epoch fine-tunes after the last step"""
    round_to: tunable("int", ge=1, le=64) = 1
    """keep a multiple of this many channels in each pruned layer (e.g. 8: CPU kernels are vectorised over channel blocks, and odd counts can be slower than the unpruned layer)"""
    prune_backend: tunable("str", choices=PRUNE_BACKENDS) = "torch_pruning"
    """who chooses the channels: torch_pruning, or nni (pip install 'autodistill[nni]': NNI 3.0's pruners pick, Torch-Pruning removes)"""
    quantize: tunable("str", choices=QUANTIZE) = "none"
    """INT8: ptq (post-training static quantization, calibrated on training batches) or qat (quantization-aware training from qat_start on); accuracy, size and latency are the int8 model's"""
    qat_start: tunable("float", ge=0, lt=1) = 0.5
    """qat only: share of the epochs trained in float before fake quantization starts (never before pruning is done)"""
    calibration_batches: fixed_only("int", ge=1, le=1000) = 8
    """training batches (of train.batch_size) that calibrate the activation ranges (ptq)"""
    engine: fixed_only("str", choices=QUANT_ENGINES) = "auto"
    """which PT2E quantizer annotates the network for the runtime that deploys it: x86 (torchao's X86InductorQuantizer, for torch.compile), onnxruntime (uint8 activations, every conv/matmul/add quantized: ONNX Runtime's fast kernels), xnnpack (ExecuTorch's XNNPACKQuantizer, for phones); auto follows latency.backend (onnxruntime -> onnxruntime, executorch -> xnnpack, else x86)"""

    reduce_range: Annotated[bool | Literal["auto"], BeforeValidator(_auto_or_bool)] = "auto"
    """int8 weights in 7 bits (-63..63) instead of 8: ONNX Runtime's int8 kernels on x86 CPUs without VNNI (AMD EPYC before Zen 4, Intel Xeon before Cascade Lake) add u8 x s8 products in pairs in 16 bits and saturate with 8-bit weights; auto (the default): on for engine onnxruntime, off for x86 and xnnpack"""

    @model_validator(mode="after")
    def _check(self) -> CompressConfig:
        if self.prune_stage_rates is not None and not self.prune_stage_rates:
            raise ValueError("prune_stage_rates: give one rate per stage, or leave it out")
        if self.prune_backend == "nni" and isinstance(self.importance, str) and self.importance not in NNI_IMPORTANCES:
            raise ValueError(f"importance {self.importance!r} is not available with prune_backend nni; use l1, l2, fpgm or taylor")
        if self.prune_backend == "nni" and self.prune_global is True:
            raise ValueError("prune_global is not available with prune_backend nni (NNI prunes each layer by its rate here)")
        return self

    @property
    def prunes(self) -> bool:
        """True when this (resolved) config removes channels."""
        rates = [self.prune_rate, *(self.prune_stage_rates or [])]
        return any(is_distribution(r) or r > 0 for r in rates)

    @property
    def active(self) -> bool:
        """True when this (resolved) config prunes or quantizes."""
        return self.prunes or self.quantize != "none"


def compress_may_be_active(compress: CompressConfig) -> bool:
    """Whether a trial of this (possibly searched) section may prune or quantize."""
    return compress.prunes or any(q != "none" for q in choices(compress.quantize))
