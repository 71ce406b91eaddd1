"""INT8 quantization with PyTorch's FX graph mode (``torch.ao.quantization.quantize_fx``).

* PTQ: ``prepare_fx`` inserts observers, a few training batches calibrate the activation
  ranges, ``convert_fx`` produces a network whose convolutions and linear layers run int8
  kernels (per-channel weights, per-tensor activations; the engine's default qconfig).
* QAT: ``prepare_qat_fx`` folds BatchNorm into the convolutions and inserts fake
  quantization; training goes on with it, and ``convert_fx`` ends it the same way.

A quantized network is rebuilt from its spec by preparing and converting a freshly built
float network the same way (no calibration); its state dict (int8 weights, scales and zero
points) then loads into it exactly (:func:`quantized_skeleton`).

The int8 kernels are CPU-only: ``x86`` (FBGEMM and oneDNN, chosen by shape), ``fbgemm``,
``onednn`` or ``qnnpack`` (ARM). The engine is a process-wide torch setting:
:func:`use_engine` sets it wherever an int8 model is built or run.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from contextlib import contextmanager

import torch
import torch.nn as nn

from .._errors import ConfigError


def use_engine(engine: str) -> None:
    supported = torch.backends.quantized.supported_engines
    if engine not in supported:
        raise ConfigError(f"compress.engine: {engine!r} is not available in this torch build; available: {', '.join(e for e in supported if e != 'none')}")
    if torch.backends.quantized.engine != engine:
        torch.backends.quantized.engine = engine


@contextmanager
def _quiet():
    with warnings.catch_warnings():  # torch.ao's deprecation notices, once per call otherwise
        warnings.simplefilter("ignore")
        yield


def prepare_ptq(model: nn.Module, example: torch.Tensor, engine: str) -> nn.Module:
    """Observers inserted (eval mode); run calibration batches through the result."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx

    use_engine(engine)
    model.eval()
    with _quiet():
        return prepare_fx(model, get_default_qconfig_mapping(engine), (example,))


def prepare_qat(model: nn.Module, example: torch.Tensor, engine: str) -> nn.Module:
    """BatchNorm folded and fake quantization inserted (train mode)."""
    from torch.ao.quantization import get_default_qat_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    use_engine(engine)
    model.train()
    with _quiet():
        return prepare_qat_fx(model, get_default_qat_qconfig_mapping(engine), (example,))


@torch.no_grad()
def calibrate(prepared: nn.Module, inputs: Iterable[torch.Tensor]) -> None:
    prepared.eval()
    for x in inputs:
        prepared(x)


def convert(prepared: nn.Module) -> nn.Module:
    """The int8 network (eval mode) from a calibrated or QAT-trained prepared one."""
    from torch.ao.quantization.quantize_fx import convert_fx

    prepared.eval()
    with _quiet():
        return convert_fx(prepared)


def quantized_skeleton(float_model: nn.Module, example: torch.Tensor, method: str, engine: str) -> nn.Module:
    """An int8 network of the right structure for ``load_state_dict`` of a saved one."""
    prepared = prepare_qat(float_model, example, engine) if method == "qat" else prepare_ptq(float_model, example, engine)
    with _quiet():  # uncalibrated observers: the scales come from the state dict
        return convert(prepared)


def is_quantized(model: nn.Module) -> bool:
    return any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules())
