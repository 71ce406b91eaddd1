"""Teacher and student language models: ``transformers`` Qwen2 / Llama causal LMs built from
configs, their parameter counts, and how a student starts from its teacher.

A student is the teacher's architecture at another shape (hidden size, layers, heads,
key-value heads, MLP width) with the teacher's vocabulary. Its initialisation:

- ``random``: the architecture's own initialisation, seeded;
- ``teacher_layers``: the teacher's embeddings, final norm and head, and every k-th of its
  layers (evenly spaced, first and last kept), DistilBERT-style; the width must be the teacher's;
- ``pruned_teacher``: the same layers, each pruned in width to the student's shape by the
  importance of its activations on a batch of training text (Minitron): hidden channels by the
  mean |activation| of the residual stream over all layers, MLP neurons by the mean |input| of
  ``down_proj``, key-value groups and the query heads in each by the mean norm of their
  attention output. The head size must stay the teacher's.

When the shape does not allow the chosen start, the student starts at random and the trial
records why (``init_used``), rather than failing.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ... import layout
from ..._errors import CheckpointError, ConfigError
from ...checkpoints import load_state_dict, load_weights
from ...config import LM_FAMILIES, check_heads

SHAPE = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size")


def config_class(family: str):
    from transformers import LlamaConfig, Qwen2Config

    return {"qwen2": Qwen2Config, "llama": LlamaConfig}[family]


def model_class(family: str):
    from transformers import LlamaForCausalLM, Qwen2ForCausalLM

    return {"qwen2": Qwen2ForCausalLM, "llama": LlamaForCausalLM}[family]


def new_config(family: str, shape: dict[str, Any], vocab_size: int, max_positions: int, eos_id: int | None):
    """The ``transformers`` config of a ``family`` model of ``shape`` (see :data:`SHAPE`)."""
    heads = shape["num_attention_heads"]
    return config_class(family)(
        vocab_size=vocab_size,
        hidden_size=shape["hidden_size"],
        num_hidden_layers=shape["num_hidden_layers"],
        num_attention_heads=heads,
        num_key_value_heads=shape.get("num_key_value_heads") or heads,
        intermediate_size=shape.get("intermediate_size") or 3 * shape["hidden_size"],
        max_position_embeddings=max_positions,
        tie_word_embeddings=False,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )


def student_config(teacher_config, shape: dict[str, Any]):
    """The teacher's config at the student's ``shape`` (null key-value heads = the heads, null
    MLP width = 3 x hidden); ValueError naming the field when heads do not fit."""
    hidden, heads, kv = shape["hidden_size"], shape["num_attention_heads"], shape.get("num_key_value_heads") or shape["num_attention_heads"]
    check_heads(hidden, heads, kv, where="student: ")
    raw = teacher_config.to_dict()
    for key in ("head_dim", "_name_or_path", "architectures", "transformers_version", "torch_dtype", "dtype"):
        raw.pop(key, None)
    raw.update(
        hidden_size=hidden,
        num_hidden_layers=shape["num_hidden_layers"],
        num_attention_heads=heads,
        num_key_value_heads=kv,
        intermediate_size=shape.get("intermediate_size") or 3 * hidden,
    )
    if "layer_types" in raw:  # per-layer attention kinds (sliding window or not): the first layers' pattern
        raw["layer_types"] = (list(raw["layer_types"]) * shape["num_hidden_layers"])[: shape["num_hidden_layers"]]
    return type(teacher_config).from_dict(raw)


def family_of(config, path: str) -> str:
    family = getattr(config, "model_type", "")
    if family not in LM_FAMILIES:
        raise ConfigError(f"teacher.checkpoint: {path}: model_type {family!r} is not supported; valid: {', '.join(LM_FAMILIES)}")
    return family


def shape_of(config) -> dict[str, int]:
    return {k: int(getattr(config, k) or config.num_attention_heads) for k in SHAPE}


def head_dim(config) -> int:
    return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)


def build(config, seed: int, attention: str = "sdpa") -> nn.Module:
    """A model of ``config`` at its seeded random initialisation; ``attention`` eager when the
    attention matrices are needed (sdpa does not return them)."""
    config._attn_implementation = attention
    torch.manual_seed(seed)
    return model_class(config.model_type)(config).float()


def portable(model: nn.Module) -> nn.Module:
    """A copy of ``model`` that pickles (to ship it to the trials through Ray's object store):
    transformers leaves output-capturing hooks on a model that returned its hidden states or
    attentions, and those hold a ContextVar, which does not pickle."""
    copy = build(type(model.config).from_dict(model.config.to_dict()), 0, model.config._attn_implementation or "sdpa")
    copy.load_state_dict(model.state_dict())
    return copy.eval()


def set_attention(model: nn.Module, attention: str) -> None:
    model.config._attn_implementation = attention
    if hasattr(model, "set_attn_implementation"):
        with contextlib.suppress(Exception):  # older transformers: the config attribute is read at each forward
            model.set_attn_implementation(attention)


def param_counts(model: nn.Module) -> dict[str, int]:
    """params (all), params_embedding (input embedding, and the output head when not tied),
    params_non_embedding (the rest: what the transformer layers cost)."""
    total = sum(p.numel() for p in model.parameters())
    seen: set[int] = set()
    embedding = 0
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):
        if module is not None and id(module.weight) not in seen:
            seen.add(id(module.weight))
            embedding += module.weight.numel()
    return {"params": total, "params_embedding": embedding, "params_non_embedding": total - embedding}


def even_layers(n_teacher: int, n_student: int) -> list[int]:
    """``n_student`` teacher layer indices evenly spaced from the first to the last (every k-th)."""
    if n_student == 1:
        return [n_teacher - 1]
    return [round(i * (n_teacher - 1) / (n_student - 1)) for i in range(n_student)]


def init_student(student: nn.Module, teacher: nn.Module, init: str, calibration: torch.Tensor | None) -> str:
    """Start ``student`` as ``init`` says (see the module doc); returns what was done:
    ``init`` itself, or ``random (<why not init>)``."""
    if init == "random":
        return "random"
    why = _why_not(student.config, teacher.config, init)
    if why:
        return f"random ({init}: {why})"
    layers = even_layers(teacher.config.num_hidden_layers, student.config.num_hidden_layers)
    if init == "teacher_layers":
        keep = None
    else:
        keep = importance_keep(teacher, student.config, calibration)
    copy_from_teacher(student, teacher, layers, keep)
    return init


def _why_not(s, t, init: str) -> str:
    ss, ts = shape_of(s), shape_of(t)
    if s.num_hidden_layers > t.num_hidden_layers:
        return f"the student has more layers ({s.num_hidden_layers}) than the teacher ({t.num_hidden_layers})"
    if init == "teacher_layers":
        differ = [k for k in SHAPE if k != "num_hidden_layers" and ss[k] != ts[k]]
        return f"the width differs from the teacher's ({', '.join(differ)})" if differ else ""
    if head_dim(s) != head_dim(t):
        return f"head size {head_dim(s)} differs from the teacher's {head_dim(t)}"
    for key in ("hidden_size", "intermediate_size", "num_key_value_heads"):
        if ss[key] > ts[key]:
            return f"{key} {ss[key]} is larger than the teacher's {ts[key]}"
    if ss["num_attention_heads"] // ss["num_key_value_heads"] > ts["num_attention_heads"] // ts["num_key_value_heads"]:
        return "more query heads per key-value head than the teacher has"
    return ""


@torch.no_grad()
def importance_keep(teacher: nn.Module, student_config, calibration: torch.Tensor) -> dict[str, Any]:
    """What the student keeps of each teacher layer, by activation importance on
    ``calibration`` (token ids (B, T)): hidden channels, per layer MLP neurons and query/KV heads."""
    t = teacher.config
    hd, groups, per_group = head_dim(t), t.num_key_value_heads, t.num_attention_heads // t.num_key_value_heads
    mlp_in: dict[int, torch.Tensor] = {}
    attn_in: dict[int, torch.Tensor] = {}
    hooks = []
    for i, layer in enumerate(teacher.model.layers):
        hooks.append(layer.mlp.down_proj.register_forward_hook(lambda m, args, out, i=i: mlp_in.__setitem__(i, args[0].abs().mean(dim=(0, 1)))))
        hooks.append(layer.self_attn.o_proj.register_forward_hook(lambda m, args, out, i=i: attn_in.__setitem__(i, args[0])))
    was = teacher.training
    teacher.eval()
    try:
        out = teacher(input_ids=calibration, output_hidden_states=True, use_cache=False)
    finally:
        for h in hooks:
            h.remove()
        teacher.train(was)
    channel = sum(h.abs().mean(dim=(0, 1)) for h in out.hidden_states)
    s = student_config
    s_per_group = s.num_attention_heads // s.num_key_value_heads
    keep: dict[str, Any] = {"hidden": _top(channel, s.hidden_size), "mlp": {}, "q": {}, "kv": {}}
    for i in range(t.num_hidden_layers):
        keep["mlp"][i] = _top(mlp_in[i], s.intermediate_size)
        heads = attn_in[i].view(*attn_in[i].shape[:2], t.num_attention_heads, hd).norm(dim=-1).mean(dim=(0, 1))  # (heads,)
        by_group = heads.view(groups, per_group)
        kv = _top(by_group.sum(dim=1), s.num_key_value_heads)
        keep["kv"][i] = kv
        keep["q"][i] = torch.cat([g * per_group + _top(by_group[g], s_per_group) for g in kv.tolist()])
    return keep


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest scores, in their original order."""
    return scores.topk(k).indices.sort().values


def _rows(n_heads_idx: torch.Tensor, hd: int) -> torch.Tensor:
    return (n_heads_idx[:, None] * hd + torch.arange(hd)).flatten()


@torch.no_grad()
def copy_from_teacher(student: nn.Module, teacher: nn.Module, layers: list[int], keep: dict[str, Any] | None) -> None:
    """Copy the teacher's embeddings, final norm, head and ``layers`` into ``student``, sliced
    by ``keep`` (None: whole, the shapes are equal)."""
    hid = keep["hidden"] if keep else slice(None)
    hd = head_dim(teacher.config)
    s_model, t_model = student.model, teacher.model
    s_model.embed_tokens.weight.copy_(t_model.embed_tokens.weight[:, hid])
    s_model.norm.weight.copy_(t_model.norm.weight[hid])
    student.lm_head.weight.copy_(teacher.lm_head.weight[:, hid])
    for si, ti in enumerate(layers):
        s_layer, t_layer = s_model.layers[si], t_model.layers[ti]
        if keep is None:
            s_layer.load_state_dict(t_layer.state_dict())
            continue
        q_rows, kv_rows, neurons = _rows(keep["q"][ti], hd), _rows(keep["kv"][ti], hd), keep["mlp"][ti]
        for name in ("input_layernorm", "post_attention_layernorm"):
            getattr(s_layer, name).weight.copy_(getattr(t_layer, name).weight[hid])
        s_att, t_att, s_mlp, t_mlp = s_layer.self_attn, t_layer.self_attn, s_layer.mlp, t_layer.mlp
        for s_lin, t_lin, rows, cols in (
            (s_att.q_proj, t_att.q_proj, q_rows, hid),
            (s_att.k_proj, t_att.k_proj, kv_rows, hid),
            (s_att.v_proj, t_att.v_proj, kv_rows, hid),
            (s_att.o_proj, t_att.o_proj, hid, q_rows),
            (s_mlp.gate_proj, t_mlp.gate_proj, neurons, hid),
            (s_mlp.up_proj, t_mlp.up_proj, neurons, hid),
            (s_mlp.down_proj, t_mlp.down_proj, hid, neurons),
        ):
            _copy_linear(s_lin, t_lin, rows, cols)


def _copy_linear(student: nn.Linear, teacher: nn.Linear, rows, cols) -> None:
    """The teacher's weight at ``rows`` (outputs) and ``cols`` (inputs), and its bias at ``rows``."""
    student.weight.copy_(teacher.weight[rows][:, cols])
    if student.bias is not None:
        student.bias.copy_(teacher.bias[rows])


def load_checkpoint(path: str, attention: str = "sdpa") -> nn.Module:
    """A teacher from a local Hugging Face checkpoint directory, offline; ConfigError naming it."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if not (Path(path) / "config.json").is_file():
        raise ConfigError(f"teacher.checkpoint: {path}: not a transformers checkpoint (no config.json)")
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except Exception as err:
        raise ConfigError(f"teacher.checkpoint: {path}: config.json cannot be read ({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None
    family_of(config, path)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, attn_implementation=attention, dtype=torch.float32)
    except Exception as err:
        raise ConfigError(f"teacher.checkpoint: {path}: the weights cannot be loaded ({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None
    return model.eval()


def load_trial_student(trial_path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """(trained student, spec) of a finished trial's folder."""
    spec_file = trial_path / layout.SPEC
    try:
        spec = json.loads(spec_file.read_text())["spec"]
        config = config_class(spec["family"]).from_dict(spec["config"])
    except (OSError, ValueError, KeyError) as err:
        raise CheckpointError(f"{spec_file}: cannot read the student spec ({err})") from None
    model = build(config, 0)
    weights = trial_path / layout.STUDENT
    load_weights(model, load_state_dict(weights, str(weights)), str(trial_path), spec["family"])
    return model.eval(), spec
