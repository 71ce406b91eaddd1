"""The language-model teacher: a local checkpoint, or trained here once and cached (by a hash
of the corpus settings, the shape and the training config), like the image teacher; then
what trials need of it, computed once per study and cached: the top-k logits of every
training sequence and, when asked, synthetic continuations it writes (with their top-k too).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ... import _io, layout
from ..._errors import ConfigError
from ...config import TextStudyConfig, TextTrainConfig, may_be_on
from ...measure import state_dict_mb
from ...teacher import compute_device
from . import models
from .corpus import TextData
from .losses import cache_bytes_per_token, topk_cache
from .train import TextTargets, evaluate, train_lm

CACHE_VERSION = 1  # bump when the teacher training code changes what it produces
OUTPUTS_VERSION = 1
BATCH = 32  # sequences per teacher forward pass when the cache is computed


def _key(blob: Any) -> str:
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def teacher_key(config: TextStudyConfig) -> str:
    data = config.data.model_dump(mode="json", exclude={"synthetic"})
    return _key(
        {
            "version": CACHE_VERSION,
            "task": "language_modeling",
            "data": data,
            "arch": config.teacher.arch.model_dump(),
            "train": config.teacher.train.model_dump(),
        }
    )


def prepare_teacher(config: TextStudyConfig, data: TextData, log: Callable[[str], None]) -> tuple[nn.Module, dict[str, Any]]:
    """(teacher in eval mode, its record: arch, source, path, metrics)."""
    tcfg = config.teacher
    if tcfg.checkpoint:
        model = models.load_checkpoint(tcfg.checkpoint)
        if model.config.vocab_size < data.vocab_size:
            raise ConfigError(
                f"teacher.checkpoint: {tcfg.checkpoint}: its vocabulary ({model.config.vocab_size}) is smaller than its tokenizer's ({data.vocab_size})"
            )
        source, path = f"checkpoint {tcfg.checkpoint}", tcfg.checkpoint
    else:
        cache = layout.teacher_cache(config.execution.results, teacher_key(config))
        arch = tcfg.arch.model_dump()
        family = arch.pop("family")
        cfg = models.new_config(family, arch, data.vocab_size, data.seq_len, data.tokenizer.eos_token_id)
        path = str(cache)
        if (cache / "config.json").is_file() and (cache / "model.safetensors").is_file():
            model = models.model_class(family).from_pretrained(str(cache), local_files_only=True, dtype=torch.float32).eval()
            source = f"cache {cache}"
        else:
            model = models.build(cfg, tcfg.train.seed)
            source = _train_teacher(config, data, model, cache, log)
    model.eval()
    val, test = evaluate(model, data.val), evaluate(model, data.test)
    counts = models.param_counts(model)
    record = {
        "arch": {"family": model.config.model_type, **models.shape_of(model.config)},
        "family": model.config.model_type,
        "source": source,
        "path": path,
        "metrics": {
            "perplexity": val["perplexity"],
            "token_accuracy": val["token_accuracy"],
            "test_perplexity": test["perplexity"],
            "test_token_accuracy": test["token_accuracy"],
            **counts,
            "size_mb": state_dict_mb(model),
        },
    }
    return model, record


def _train_teacher(config: TextStudyConfig, data: TextData, model: nn.Module, cache: Path, log: Callable[[str], None]) -> str:
    t = config.teacher.train
    counts = models.param_counts(model)
    epochs = 4
    train_cfg = TextTrainConfig(
        epochs=epochs,
        steps_per_epoch=max(t.steps // epochs, 1),
        batch_size=t.batch_size,
        lr=t.lr,
        weight_decay=t.weight_decay,
        warmup_fraction=min(t.warmup_steps / t.steps, 0.5),
    )
    log(
        f"training teacher {model.config.model_type} ({counts['params']:,} params, {counts['params_non_embedding']:,} non-embedding) for {t.steps} steps of {t.batch_size} x {data.seq_len} tokens"
    )
    started = time.perf_counter()

    def progress(stats) -> None:
        log(f"  teacher step {stats.epoch * train_cfg.steps_per_epoch}/{t.steps}: loss {stats.loss:.4f}, val perplexity {stats.extra['perplexity']:.3f}")

    train_lm(model, data.train, data.val, train_cfg, seed=t.seed, on_epoch=progress, device=compute_device(config))
    model.to("cpu").eval()
    seconds = time.perf_counter() - started

    with _io.atomic_dir(cache) as tmp:
        model.save_pretrained(tmp)
        data.tokenizer.save_pretrained(tmp)
        (tmp / "autodistill.json").write_text(json.dumps({"train_seconds": seconds, "steps": t.steps}))
    return f"trained in {seconds:.1f} s, cached at {cache}"


def outputs_key(teacher: nn.Module, data: TextData, config: TextStudyConfig) -> str:
    digest = hashlib.sha256()
    for value in teacher.state_dict().values():
        digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()[:4096])
        digest.update(str(tuple(value.shape)).encode())
    digest.update(data.train.numpy().tobytes())
    blob = {"version": OUTPUTS_VERSION, "k": config.distill.top_k, "synthetic": config.data.synthetic.model_dump(), "weights": digest.hexdigest()}
    return _key(blob)


@torch.no_grad()
def topk_of(teacher: nn.Module, seqs: torch.Tensor, k: int, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The teacher's top-k cache (values, indices, tail) of every position of ``seqs``."""
    teacher.to(device).eval()
    parts = []
    for start in range(0, len(seqs), BATCH):
        logits = teacher(input_ids=seqs[start : start + BATCH].to(device), use_cache=False).logits
        parts.append(tuple(t.cpu() for t in topk_cache(logits, k)))
    teacher.to("cpu")
    return tuple(torch.cat([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]


@torch.no_grad()
def generate(teacher: nn.Module, data: TextData, config: TextStudyConfig, device: str) -> torch.Tensor:
    """``data.synthetic.count`` continuations of prompts cut from training sequences, sampled
    with the configured top-p and temperature, each data.seq_len tokens long."""
    syn = config.data.synthetic
    gen = torch.Generator().manual_seed(syn.seed)
    rows = torch.randint(len(data.train), (syn.count,), generator=gen)
    prompts = data.train[rows, : syn.prompt_tokens]
    torch.manual_seed(syn.seed)
    teacher.to(device).eval()
    out = []
    eos = data.tokenizer.eos_token_id
    for start in range(0, syn.count, BATCH):
        batch = prompts[start : start + BATCH].to(device)
        seq = teacher.generate(
            input_ids=batch,
            attention_mask=torch.ones_like(batch),
            do_sample=True,
            top_p=syn.top_p,
            top_k=0,
            temperature=syn.temperature,
            max_new_tokens=data.seq_len - syn.prompt_tokens,
            min_new_tokens=data.seq_len - syn.prompt_tokens,
            pad_token_id=eos,
        )
        out.append(seq[:, : data.seq_len].cpu())
    teacher.to("cpu")
    return torch.cat(out)


def teacher_targets(config: TextStudyConfig, data: TextData, teacher: nn.Module, log: Callable[[str], None]) -> TextTargets:
    """The study's teacher targets: loaded from the outputs cache, or computed and cached.
    With ``distill.top_k: 0`` nothing is cached but the synthetic continuations: the teacher
    runs on every batch and KD reads its full logits."""
    device = compute_device(config)
    k = config.distill.top_k
    cache = layout.outputs_cache(config.execution.results, outputs_key(teacher, data, config))
    file = cache / "topk.pt"
    started = time.perf_counter()
    if file.is_file():
        saved = torch.load(file, map_location="cpu", weights_only=True)
        where = f"cache {cache}"
    else:
        saved = {"train": topk_of(teacher, data.train, k, device) if k else (None, None, None)}
        if config.data.synthetic.count:
            syn = config.data.synthetic
            log(f"the teacher writes {syn.count} synthetic continuations (top-p {syn.top_p}, temperature {syn.temperature})")
            saved["synthetic"] = generate(teacher, data, config, device)
            if k:
                saved["synthetic_cache"] = topk_of(teacher, saved["synthetic"], k, device)
        if k or config.data.synthetic.count:
            _io.torch_save(file, saved)
            where = f"computed in {time.perf_counter() - started:.1f} s, cached at {cache}"
    targets = TextTargets(*saved["train"], synthetic=saved.get("synthetic"), synthetic_cache=saved.get("synthetic_cache"), source=where)
    internals = _cache_internals(config, data, teacher, targets, cache, device, log)
    distill = config.distill
    missing = (may_be_on(distill.hidden_weight) and "hidden" not in internals) or (may_be_on(distill.attention_weight) and "attentions" not in internals)
    if missing or not k:
        targets.teacher = teacher
    if not k:
        log("teacher outputs: no top-k cache (distill.top_k: 0): the teacher runs on every batch and KD reads its full logits")
        return targets
    tokens = targets.values.shape[0] * targets.values.shape[1]
    live = ", the teacher runs on every batch for the hidden-state and attention losses the cache does not hold" if missing else ""
    log(f"teacher outputs: top-{k} logits of {tokens:,} tokens, {cache_bytes_per_token(k)} bytes per token ({targets.nbytes / 2**20:.1f} MB), {where}{live}")
    return targets


def internals_bytes(teacher: nn.Module, rows: int, seq_len: int) -> dict[str, int]:
    """Bytes of the teacher's hidden states (every layer and the embeddings) and of its
    attention matrices (every layer), float16, for ``rows`` sequences of ``seq_len``."""
    c = teacher.config
    return {
        "hidden": (c.num_hidden_layers + 1) * rows * seq_len * c.hidden_size * 2,
        "attentions": c.num_hidden_layers * rows * c.num_attention_heads * seq_len * seq_len * 2,
    }


def _cache_internals(config: TextStudyConfig, data: TextData, teacher: nn.Module, targets: TextTargets, cache: Path, device: str, log) -> set[str]:
    """Cache what the hidden-state and attention losses read of the teacher (float16, the
    training sequences then the synthetic ones) when it fits ``execution.teacher_cache_gb``
    (hidden states first: they are the smaller); returns what was cached."""
    distill = config.distill
    want = [name for name, weight in (("hidden", distill.hidden_weight), ("attentions", distill.attention_weight)) if may_be_on(weight)]
    if not want:
        return set()
    seqs = data.train if targets.synthetic is None else torch.cat([data.train, targets.synthetic])
    sizes = internals_bytes(teacher, len(seqs), data.seq_len)
    budget = config.execution.teacher_cache_gb * 2**30
    chosen = want if sum(sizes[n] for n in want) <= budget else [n for n in want[:1] if sizes[n] <= budget]
    if not chosen:
        log(
            f"teacher internals: {' and '.join(want)} need {sum(sizes[n] for n in want) / 2**30:.2f} GB, over execution.teacher_cache_gb: the teacher runs on every batch"
        )
        return set()
    file = cache / f"internals-{'-'.join(chosen)}.pt"
    if file.is_file():
        saved = torch.load(file, map_location="cpu", weights_only=True)
    else:
        saved = internals_of(teacher, seqs, "hidden" in chosen, "attentions" in chosen, device)
        _io.torch_save(file, saved)
    for name in chosen:
        setattr(targets, name, saved[name])
    log(f"teacher internals cached: {' and '.join(chosen)}, {sum(sizes[n] for n in chosen) / 2**20:.1f} MB (float16) at {file}")
    return set(chosen)


@torch.no_grad()
def internals_of(teacher: nn.Module, seqs: torch.Tensor, hidden: bool, attentions: bool, device: str) -> dict[str, list[torch.Tensor]]:
    """The teacher's hidden states and / or attention matrices of ``seqs``, float16, per layer."""
    before = teacher.config._attn_implementation
    if attentions:
        models.set_attention(teacher, "eager")
    teacher.to(device).eval()
    parts: dict[str, list[list[torch.Tensor]]] = {"hidden": [], "attentions": []}
    try:
        for start in range(0, len(seqs), BATCH):
            out = teacher(input_ids=seqs[start : start + BATCH].to(device), use_cache=False, output_hidden_states=hidden, output_attentions=attentions)
            if hidden:
                parts["hidden"].append([h.half().cpu() for h in out.hidden_states])
            if attentions:
                parts["attentions"].append([a.half().cpu() for a in out.attentions])
    finally:
        teacher.to("cpu")
        models.set_attention(teacher, before)
    return {name: [torch.cat(layer) for layer in zip(*chunks)] for name, chunks in parts.items() if chunks}
