"""The study file of a ``language_modeling`` study: a causal language model (Qwen2 or Llama
architecture, ``transformers``) distilled into smaller ones of the same architecture.

Sections: ``data`` (the corpus, its tokenizer and the teacher's synthetic continuations),
``teacher``, ``student`` (the searchable shape and how it starts), ``distill`` (token-level
KD, CE, hidden-state and attention losses), ``train``; the rest is every task's (``search``,
``latency``, ``execution``, ``objectives``, ``constraints``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from .._tunable import fixed_only, tunable
from ._base import Section, has_distribution, may_be_on
from ._options import (
    KD_LOSSES,
    LM_ATTENTION_LOSSES,
    LM_FAMILIES,
    LM_HIDDEN_DISTANCES,
    LM_INITS,
    PRECISIONS,
    TOKEN_WEIGHTING,
    TOKENIZERS,
    WEIGHT_SCHEDULES,
)
from ._recipe import TemperatureConfig
from ._rules import COMMON_RULES
from ._study import StudyBase

EMBEDDED_CORPUS = "pydoc_topics"
"""the corpus that ships with Python: the English prose of its documentation (``pydoc_data.topics``)"""


class SyntheticConfig(Section):
    """Continuations the teacher writes once per study (cached), mixed into training at
    ``distill.synthetic_ratio``."""

    count: fixed_only("int", ge=0) = 0
    """continuations to generate (one sequence of data.seq_len tokens each); 0 = none"""
    prompt_tokens: fixed_only("int", ge=1) = 16
    """each continuation starts from this many tokens of a training sequence"""
    top_p: fixed_only("float", gt=0, le=1) = 0.9
    """nucleus sampling: the smallest set of tokens holding this much probability"""
    temperature: fixed_only("float", gt=0, le=10) = 0.7
    """sampling temperature of the teacher"""
    seed: int = 0


class CorpusConfig(Section):
    corpus: str = EMBEDDED_CORPUS
    """pydoc_topics (the Python documentation's prose, shipped with Python: 79 documents, 465 KB), or a path: a .txt file (documents separated by a line holding only ---), a .jsonl file (one {"text": ...} per line), or a folder of .txt files (one document each)"""
    seq_len: fixed_only("int", ge=8, le=8192) = 128
    """tokens per training sequence (the corpus is cut into sequences of this length, split by document)"""
    val_fraction: fixed_only("float", gt=0, lt=0.5) = 0.1
    """share of the corpus (in characters, whole documents) held out for validation"""
    test_fraction: fixed_only("float", ge=0, lt=0.5) = 0.1
    """share held out for the test set (whole documents)"""
    split_seed: int = 0
    """seed of the document shuffle that makes the splits"""
    tokenizer: fixed_only("str", choices=TOKENIZERS) = "byte"
    """of a teacher trained here: byte (256 byte tokens + end of text: exact, no training) or bpe (byte-level BPE trained on the training split); a teacher checkpoint brings its own"""
    vocab_size: fixed_only("int", ge=260, le=262144) = 1024
    """bpe: vocabulary size"""
    max_train_tokens: int | None = Field(None, ge=1)
    """use at most this many training tokens (null = all)"""
    synthetic: SyntheticConfig = SyntheticConfig()

    @field_validator("corpus")
    @classmethod
    def _expand(cls, corpus: str) -> str:
        # existence is checked on the driver (check_paths): a trial re-validates on a worker
        return corpus if corpus == EMBEDDED_CORPUS else str(Path(os.path.expanduser(corpus)))


class LMArch(Section):
    """A fixed transformer shape (the teacher's, when it is trained here)."""

    family: Literal[LM_FAMILIES] = "qwen2"  # type: ignore[valid-type]
    """qwen2 or llama (transformers' Qwen2ForCausalLM / LlamaForCausalLM)"""
    hidden_size: int = Field(128, ge=8)
    num_hidden_layers: int = Field(4, ge=1)
    num_attention_heads: int = Field(4, ge=1)
    num_key_value_heads: int | None = Field(2, ge=1)
    """null = num_attention_heads (no grouped-query attention)"""
    intermediate_size: int = Field(384, ge=1)

    @model_validator(mode="after")
    def _heads(self) -> LMArch:
        check_heads(self.hidden_size, self.num_attention_heads, self.num_key_value_heads)
        return self


def check_heads(hidden: int, heads: int, kv_heads: int | None, where: str = "") -> None:
    """``hidden`` divisible by ``heads``, ``kv_heads`` dividing ``heads``; ValueError naming the fields."""
    if hidden % heads:
        raise ValueError(f"{where}hidden_size {hidden} is not divisible by num_attention_heads {heads}")
    if kv_heads is not None and heads % kv_heads:
        raise ValueError(f"{where}num_key_value_heads {kv_heads} does not divide num_attention_heads {heads}")


class TextTeacherTrainConfig(Section):
    """How the teacher is trained when no checkpoint is given (once; cached)."""

    steps: fixed_only("int", ge=1) = 400
    lr: fixed_only("float", gt=0) = 3e-3
    batch_size: fixed_only("int", ge=1) = 16
    weight_decay: fixed_only("float", ge=0) = 0.01
    warmup_steps: fixed_only("int", ge=0) = 20
    seed: int = 0


class TextTeacherConfig(Section):
    checkpoint: str | None = None
    """a local Hugging Face checkpoint directory (config.json, weights, tokenizer) of a qwen2 or llama causal LM, loaded offline; without one, arch is trained here once and cached"""
    arch: LMArch = LMArch()
    """the shape of a teacher trained here (ignored with a checkpoint)"""
    train: TextTeacherTrainConfig = TextTeacherTrainConfig()

    @field_validator("checkpoint")
    @classmethod
    def _expand_checkpoint(cls, path: str | None) -> str | None:
        return None if path is None else str(Path(os.path.expanduser(path)))


class TextStudentConfig(Section):
    """The student: the teacher's architecture at a searched shape, with the teacher's
    tokenizer (so token-level KD is exact)."""

    hidden_size: tunable("int", ge=8, le=65536) = 64
    num_hidden_layers: tunable("int", ge=1, le=512) = 2
    num_attention_heads: tunable("int", ge=1, le=1024) = 2
    num_key_value_heads: tunable("int", ge=1, le=1024, optional=True) = None
    """null = num_attention_heads; must divide num_attention_heads"""
    intermediate_size: tunable("int", ge=1, le=262144, optional=True) = None
    """null = 3 x hidden_size"""
    init: tunable("str", choices=LM_INITS) = "random"
    """random; teacher_layers (the teacher's every k-th layer, DistilBERT-style: the student must have the teacher's width); pruned_teacher (the teacher's layers at even depth, pruned to the student's width by activation importance, Minitron-style: head_dim must stay the teacher's). A shape that does not allow it starts at random and the trial records why"""


class TextDistillConfig(Section):
    """The loss of a language-model trial::

        total = w_ce * CE + w_kd * T^2 * D(teacher_T, student_T) + hidden_weight * hidden + attention_weight * attention

    D is forward KL, reverse KL or JSD over the vocabulary at every token (weighted by the
    teacher's entropy when token_weighting: entropy); the teacher's distribution comes from
    its top-k logits, cached once per study; w_kd = alpha (scheduled to alpha_end), w_ce =
    ce_weight or 1 - w_kd."""

    kd_loss: tunable("str", choices=KD_LOSSES) = "forward_kl"
    """forward_kl (KL(teacher || student), mean-seeking), reverse_kl (KL(student || teacher), mode-seeking) or jsd (Jensen-Shannon, beta 0.5)"""
    alpha: tunable("float", ge=0, le=1) = 0.7
    """weight of the token-level KD term (at the first step, when alpha_end is set)"""
    alpha_end: tunable("float", ge=0, le=1, optional=True) = None
    """KD weight at the last step; null keeps alpha constant"""
    alpha_schedule: tunable("str", choices=WEIGHT_SCHEDULES) = "linear"
    ce_weight: tunable("float", ge=0, le=10, optional=True) = None
    """weight of the next-token cross-entropy on the data; null = 1 - the KD weight"""
    temperature: TemperatureConfig = TemperatureConfig(start=1.0, end=1.0)
    """the write-up's 2.0 early then 1.0 is {schedule: step, start: 2.0, end: 1.0}"""
    top_k: fixed_only("int", ge=0, le=262144) = 32
    """teacher logits kept per token in the cache (values float16, indices int32, plus the tail's log-mass: see the README); 0 = no cache: the teacher runs on every batch and KD reads its full logits (exact at any temperature, one teacher forward per step)"""
    token_weighting: tunable("str", choices=TOKEN_WEIGHTING) = "none"
    """entropy: each token's KD term weighted by the teacher's normalised entropy there (mean 1 over the batch); none = equal"""
    hidden_weight: tunable("float", ge=0, le=1000) = 0.0
    """weight of the hidden-state loss: each student layer against the teacher layer at the same relative depth, through a learned projection when widths differ; 0 = off"""
    hidden_distance: tunable("str", choices=LM_HIDDEN_DISTANCES) = "mse"
    attention_weight: tunable("float", ge=0, le=1000) = 0.0
    """weight of the attention-matrix loss (layers mapped by relative depth, heads averaged when the counts differ); 0 = off"""
    attention_loss: tunable("str", choices=LM_ATTENTION_LOSSES) = "kl"
    """kl: KL between the teacher's and the student's attention rows; frobenius: the Frobenius norm of their difference (per row, mean)"""
    stage1_fraction: tunable("float", ge=0, lt=1) = 0.0
    """two-stage training: this fraction of the steps trains on the hidden-state loss alone, then KD, CE and attention join; 0 = one stage"""
    noise_std: tunable("float", ge=0, le=10) = 0.0
    """Gaussian noise of this standard deviation on the student's hidden features (its embedding output) while training; 0 = off"""
    synthetic_ratio: tunable("float", ge=0, le=1) = 0.0
    """share of each batch drawn from the teacher's synthetic continuations (data.synthetic.count must be > 0)"""

    @property
    def needs_teacher_internals(self) -> bool:
        """Whether the teacher's hidden states or attentions may be needed (a searched weight counts)."""
        return may_be_on(self.hidden_weight) or may_be_on(self.attention_weight)


class TextTrainConfig(Section):
    epochs: tunable("int", ge=1, le=10000) = 2
    """epochs of one trial (the rung unit of early stopping)"""
    steps_per_epoch: tunable("int", ge=1, optional=True) = None
    """optimisation steps per epoch; null = one pass over the training sequences"""
    batch_size: tunable("int", ge=1, le=4096) = 16
    """sequences per step"""
    lr: tunable("float", gt=0, le=10) = 3e-3
    """peak learning rate (AdamW); linear warm-up, then cosine decay to 0"""
    weight_decay: tunable("float", ge=0, le=1) = 0.01
    warmup_fraction: tunable("float", ge=0, lt=1) = 0.05
    """share of the steps of linear learning-rate warm-up"""
    grad_clip: tunable("float", gt=0, optional=True) = 1.0
    """clip the gradient norm to this; null = no clipping"""
    precision: fixed_only("str", choices=PRECISIONS) = "fp32"
    """bf16: autocast to bfloat16 on a GPU (the CPU trains in fp32)"""
    gradient_checkpointing: fixed_only("bool") = False
    """recompute activations in the backward pass (less memory, ~30% more time; on a GPU)"""


def hidden_and_attention_rules(config: TextStudyConfig) -> None:
    distill = config.distill
    if may_be_on(distill.synthetic_ratio) and config.data.synthetic.count == 0:
        raise ValueError("distill.synthetic_ratio: needs data.synthetic.count > 0 (the teacher's continuations to mix in)")
    if may_be_on(distill.stage1_fraction) and not may_be_on(distill.hidden_weight):
        raise ValueError("distill.stage1_fraction: the first stage trains on the hidden-state loss alone, so distill.hidden_weight must be > 0")


def latency_of_a_language_model(config: TextStudyConfig) -> None:
    if config.latency.backend != "torch":
        raise ValueError(f"latency.backend: language_modeling measures prefill and decode with torch only (got {config.latency.backend})")


def student_heads(config: TextStudyConfig) -> None:
    """A fixed student shape has a hidden size its heads divide, and key-value heads that
    divide its heads (a searched one is checked per trial)."""
    s = config.student
    fixed = [s.hidden_size, s.num_attention_heads, s.num_key_value_heads]
    if not any(has_distribution(v) for v in fixed):
        check_heads(*fixed, where="student: ")


TEXT_RULES = (*COMMON_RULES, latency_of_a_language_model, hidden_and_attention_rules, student_heads)
"""the rules of a language_modeling study file"""


class TextStudyConfig(StudyBase):
    """The study file of a language_modeling study."""

    task: Literal["language_modeling"] = "language_modeling"
    objectives: dict[str, Literal["max", "min"]] = Field(
        default_factory=lambda: {"perplexity": "min", "params_non_embedding": "min", "decode_ms_per_token": "min"}
    )
    """metric -> direction; language_modeling metrics: perplexity, token_accuracy, params, params_non_embedding, size_mb, prefill_ms, decode_ms_per_token"""
    data: CorpusConfig = CorpusConfig()
    teacher: TextTeacherConfig = TextTeacherConfig()
    student: TextStudentConfig = TextStudentConfig()
    distill: TextDistillConfig = TextDistillConfig()
    train: TextTrainConfig = TextTrainConfig()

    rules = TEXT_RULES
