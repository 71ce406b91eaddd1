"""Export a language-model student and prove the files are the model that was measured.

- ``hf``: a Hugging Face directory (``model.safetensors``, ``config.json``,
  ``generation_config.json``, the teacher's tokenizer) that
  ``AutoModelForCausalLM.from_pretrained(dir)`` loads offline; verified by loading it back and
  computing the validation perplexity, which must equal the recorded one (relative
  :data:`PPL_TOLERANCE`), and its logits, which must equal PyTorch's (:data:`LOGIT_TOLERANCE`).
- ``onnx``: a decoder ``input_ids`` (batch, sequence; int64) -> ``logits`` (batch, sequence,
  vocabulary), no KV cache, exported with the dynamo exporter at dynamic batch and sequence
  length from a small wrapper that calls the model with ``use_cache=False`` and eager
  attention (``torch.export`` cannot take the model's own forward with its cache objects);
  verified in ONNX Runtime against PyTorch on validation sequences (max |logit diff| printed).

The folder appears only once every file passed, with ``model.json`` (the model card).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from ... import _io, layout
from ..._errors import CheckpointError
from ..._onnx import ort_session, require_onnx
from ...checkpoints import trial_params
from ...space import resolve
from .._base import ExportResult, Log, VerificationError
from ..image_classification.export import _sha256, _versions
from . import models
from .corpus import load_corpus, quiet_transformers
from .train import evaluate

LOGIT_TOLERANCE = 1e-4
PPL_TOLERANCE = 1e-4
"""relative: the reloaded model's validation perplexity against the recorded one"""
ONNX_CHECK_SEQUENCES = 16
"""validation sequences the ONNX decoder is compared on (at two lengths: the full one and half)"""
FILES = {"hf": "hf", "onnx": "decoder.onnx"}


class Decoder(nn.Module):
    """``input_ids`` -> ``logits``, no cache: what the ONNX file holds."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, use_cache=False).logits


def save_decoder_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """The decoder of ``model`` (eager attention) as ONNX at dynamic batch and sequence length."""
    require_onnx()
    models.set_attention(model, "eager")
    decoder = Decoder(model).eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    sequence = torch.export.Dim("sequence", min=2, max=max(int(model.config.max_position_embeddings), 3))
    with torch.no_grad():
        program = torch.onnx.export(
            decoder,
            (example,),
            dynamo=True,
            input_names=["input_ids"],
            output_names=["logits"],
            dynamic_shapes=({0: batch, 1: sequence},),
            external_data=False,
            verbose=False,
        )
        program.save(str(path), external_data=False)


def export_lm(
    config,
    results_dir: Path,
    summary: dict,
    row: pd.Series,
    number: int,
    formats: tuple[str, ...],
    out: Path,
    rule: str,
    log: Log,
    card_metrics: tuple[str, ...],
) -> ExportResult:
    """Trial ``number``'s language model as ``formats`` under ``out``, each verified (see the
    module doc); ``card_metrics`` are the columns of ``row`` the model card carries."""
    quiet_transformers()
    source = layout.trial_dir(results_dir, number)
    if not (source / layout.STUDENT).is_file():
        raise CheckpointError(f"{source / layout.STUDENT}: the checkpoint of trial {number} is missing")
    model, spec = models.load_trial_student(source)
    data = load_corpus(config.data, config.teacher.checkpoint)
    recorded = float(row["perplexity"])
    val = data.val
    with torch.no_grad():
        reference = model(input_ids=val[:ONNX_CHECK_SEQUENCES], use_cache=False).logits.numpy()
    checks: dict[str, dict[str, Any]] = {}
    files: dict[str, Path] = {}
    with _io.atomic_dir(out) as staging:
        if "hf" in formats:
            files["hf"] = staging / FILES["hf"]
            checks["hf"] = _export_hf(model, data, files["hf"], reference, recorded)
            log(f"  hf          {FILES['hf']}/: {checks['hf']['summary']}")
        if "onnx" in formats:
            files["onnx"] = staging / FILES["onnx"]
            checks["onnx"] = _export_onnx(model, val, files["onnx"], reference)
            log(f"  onnx        {FILES['onnx']}: {checks['onnx']['summary']}")
        for fmt, check in checks.items():
            failed = check.pop("failed")
            if failed:
                raise VerificationError(f"{fmt}: {failed}")
        trial_cfg = resolve(config, trial_params(source))
        card = _model_card(summary, row, number, rule, spec, trial_cfg, data, files, checks, config, card_metrics)
        _io.write_json(staging / "model.json", card)
    return ExportResult(out, number, {fmt: out / p.name for fmt, p in files.items()}, checks, card)


def _export_hf(model: nn.Module, data, folder: Path, reference: np.ndarray, recorded: float) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, GenerationConfig

    models.set_attention(model, "sdpa")
    model.save_pretrained(folder)
    data.tokenizer.save_pretrained(folder)
    eos = data.tokenizer.eos_token_id
    GenerationConfig(bos_token_id=eos, eos_token_id=eos, pad_token_id=eos, do_sample=True, top_p=0.9, temperature=0.7).save_pretrained(folder)
    for file in folder.iterdir():  # safetensors writes 0600; results are meant to be shared like the other exports
        file.chmod(0o666 & ~_io._umask())
    loaded = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = loaded(input_ids=data.val[: len(reference)], use_cache=False).logits.numpy()
    diff = float(np.abs(logits - reference).max())
    ppl = evaluate(loaded, data.val)["perplexity"]
    out: dict[str, Any] = {"max_abs_diff": diff, "perplexity": ppl, "recorded_perplexity": recorded, "tolerance": LOGIT_TOLERANCE}
    out["summary"] = f"AutoModelForCausalLM.from_pretrained: max |logit diff| vs PyTorch {diff:.2e}, validation perplexity {ppl:.4f} (recorded {recorded:.4f})"
    out["failed"] = None
    if not diff <= LOGIT_TOLERANCE:
        out["failed"] = f"the reloaded model's logits differ from PyTorch by {diff:.3g} (> {LOGIT_TOLERANCE:g})"
    elif abs(ppl - recorded) > PPL_TOLERANCE * recorded:
        out["failed"] = f"the reloaded model's validation perplexity {ppl:.4f} does not match the recorded {recorded:.4f}"
    return out


def _export_onnx(model: nn.Module, val: torch.Tensor, path: Path, reference: np.ndarray) -> dict[str, Any]:
    save_decoder_onnx(model, val[:2, :16].clone(), path)
    session = ort_session(path)
    ids = val[: len(reference)].numpy()
    full = session.run(["logits"], {"input_ids": ids})[0]
    half = session.run(["logits"], {"input_ids": ids[:3, : ids.shape[1] // 2]})[0]
    with torch.no_grad():
        half_ref = model(input_ids=val[:3, : ids.shape[1] // 2], use_cache=False).logits.numpy()
    diff = max(float(np.abs(full - reference).max()), float(np.abs(half - half_ref).max()))
    out: dict[str, Any] = {"max_abs_diff": diff, "sequences": len(ids), "tolerance": LOGIT_TOLERANCE}
    out["summary"] = (
        f"ONNX Runtime: max |logit diff| vs PyTorch {diff:.2e} ({len(ids)} validation sequences of {ids.shape[1]} tokens, 3 of {ids.shape[1] // 2})"
    )
    out["failed"] = None if diff <= LOGIT_TOLERANCE else f"ONNX Runtime's logits differ from PyTorch by {diff:.3g} (> {LOGIT_TOLERANCE:g})"
    models.set_attention(model, "sdpa")
    return out


def _model_card(summary, row, number, rule, spec, trial_cfg, data, files, checks, config, card_metrics) -> dict[str, Any]:
    metrics = {}
    for key in card_metrics:
        value = row.get(key)
        if value is not None and pd.notna(value):
            metrics[key] = int(value) if key.startswith("params") else float(value)
    if isinstance(row.get("latency_measured"), str):
        metrics["latency_measured"] = row["latency_measured"]
    return {
        "format": "autodistill model card v1",
        "task": "language_modeling",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "study": summary["name"],
        "trial": number,
        "picked_by": rule,
        "architecture": {"family": spec["family"], **spec["shape"], "vocab_size": spec["config"]["vocab_size"], "init": spec.get("init_used")},
        "recipe": {
            "searched": {k[len("param.") :]: (v.item() if hasattr(v, "item") else v) for k, v in row.items() if k.startswith("param.") and pd.notna(v)},
            "train": trial_cfg.train.model_dump(mode="json"),
            "distill": trial_cfg.distill.model_dump(mode="json"),
            "seed": config.search.seed,
        },
        "metrics": metrics,
        "latency": {
            "device": config.latency.device,
            "threads": config.latency.threads,
            "prompt_tokens": config.latency.prompt_tokens,
            "decode_tokens": config.latency.decode_tokens,
            "batch_size": config.latency.batch_size,
            "clock_reference_ms": summary.get("latency_clock_ms"),  # the speed the CPU figures are scaled to (measure.time_runs)
        },
        "teacher": summary.get("teacher"),
        "data": {
            "corpus": data.source,
            "seq_len": data.seq_len,
            "vocab_size": data.vocab_size,
            "documents": data.documents,
            "tokens": data.tokens,
            "input": {"name": "input_ids", "shape": ["batch", "sequence"], "dtype": "int64"},
            "output": {"name": "logits", "shape": ["batch", "sequence", data.vocab_size], "dtype": "float32"},
        },
        "files": {fmt: _file_entry(path) for fmt, path in files.items()},
        "verification": {"logit_tolerance": LOGIT_TOLERANCE, "perplexity_tolerance": PPL_TOLERANCE, **checks},
        "versions": {**_versions(), **_hf_versions()},
    }


def _file_entry(path: Path) -> dict[str, Any]:
    if path.is_dir():
        return {"path": path.name + "/", "files": {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in sorted(path.iterdir()) if p.is_file()}}
    return {"path": path.name, "bytes": path.stat().st_size, "sha256": _sha256(path)}


def _hf_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("transformers", "tokenizers", "safetensors"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    return out
