"""Latency of a causal language model, measured like the image latency (eval mode, warm-up
runs, ``latency.threads`` intra-op threads, median of ``repeats`` timed runs, p10 / p90, the
CPU's figures scaled by the study's clock: :func:`autodistill.measure.time_runs`):

- ``prefill_ms``: one forward pass over a prompt of ``latency.prompt_tokens`` tokens, batch
  ``latency.batch_size``, no cache: the time to the first token;
- ``decode_ms_per_token``: at batch 1, after the prompt filled the KV cache (not timed),
  ``latency.decode_tokens`` tokens decoded one at a time with the cache; the mean per token.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
import torch.nn as nn

from ...config import LatencyConfig
from ...measure import spread, threads, time_runs


def decode_step(model: nn.Module) -> Callable:
    """``step(ids, cache) -> (cache, next token)``: one greedy forward with the KV cache
    (transformers 5.2x names the cache ``cache``, earlier releases ``past_key_values``)."""
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def step(ids: torch.Tensor, past):
        kwargs = {name: past} if past is not None else {}
        out = model(input_ids=ids, use_cache=True, **kwargs)
        past = out.get("cache", None) if name == "cache" else out.past_key_values
        return past, out.logits[:, -1:].argmax(-1)

    return step


def measure_lm_latency(model: nn.Module, cfg: LatencyConfig, repeats: int | None = None) -> dict[str, float]:
    """prefill_ms and decode_ms_per_token (each with ``_p10`` / ``_p90``) of ``model``."""
    repeats = repeats or cfg.repeats
    device = torch.device(cfg.device if cfg.device == "cpu" or torch.cuda.is_available() else "cpu")
    vocab = model.config.vocab_size
    prompt = torch.randint(vocab, (cfg.batch_size, cfg.prompt_tokens), generator=torch.Generator().manual_seed(0)).to(device)
    was = model.training
    model.to(device).eval()
    cuda = device.type == "cuda"
    try:
        with threads(cfg.threads), torch.inference_mode():
            prefill = time_runs(lambda: model(input_ids=prompt, use_cache=False), cfg.warmup, repeats, cuda=cuda)
            one = prompt[:1]
            step = decode_step(model)

            def decode(start) -> None:
                past, token = start
                for _ in range(cfg.decode_tokens):
                    past, token = step(token, past)

            runs = time_runs(decode, max(cfg.warmup // 4, 1), repeats, cuda=cuda, setup=lambda: step(one, None))  # the prompt's step is not timed
            decode_ms = [t / cfg.decode_tokens for t in runs]
    finally:
        model.to("cpu").train(was)
    out: dict[str, float] = {}
    for name, times in (("prefill_ms", prefill), ("decode_ms_per_token", decode_ms)):
        median, p10, p90 = spread(times)
        out.update({name: median, f"{name}_p10": p10, f"{name}_p90": p90})
    return out
