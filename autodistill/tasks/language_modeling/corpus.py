"""The corpus of a language-model study: documents, their split, the tokenizer and the
training, validation and test sequences.

The embedded corpus is the English prose of the Python documentation that ships with every
CPython (``pydoc_data.topics``: 79 documents, 465 KB): real technical English, no download,
the same bytes on every machine with the same Python. Documents are split whole (a document
never straddles training and validation), by a seeded shuffle, until each held-out split has
its share of the characters.

A teacher trained here gets a tokenizer built here: ``byte`` (the 256 bytes of UTF-8 plus an
end-of-text token: nothing to train, nothing unknown) or ``bpe`` (a byte-level BPE trained on
the training split with ``tokenizers``). A teacher checkpoint brings its own tokenizer, and the
student always uses the teacher's, so token-level KD compares the same vocabulary.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..._errors import ConfigError
from ...config import EMBEDDED_CORPUS, CorpusConfig

EOS = "<|endoftext|>"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
"""a checkpoint directory holds its tokenizer in one of these"""
DOC_SEPARATOR = "---"


def quiet_transformers() -> None:
    """No progress bars or advice from transformers and huggingface_hub in a study's log."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass


def read_documents(corpus: str) -> list[str]:
    """The documents of ``data.corpus`` (see :class:`CorpusConfig`), in a stable order;
    :class:`ConfigError` naming the path when there are none."""
    if corpus == EMBEDDED_CORPUS:
        from pydoc_data.topics import topics

        return [topics[name] for name in sorted(topics)]
    path = Path(corpus)
    if not path.exists():
        raise ConfigError(f"data.corpus: not found: {corpus}")
    try:
        if path.is_dir():
            docs = [p.read_text(encoding="utf-8") for p in sorted(path.rglob("*.txt"))]
        elif path.suffix == ".jsonl":
            docs = [_jsonl_text(line, path, i) for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if line.strip()]
        else:
            docs = _split_text(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"data.corpus: {corpus}: not UTF-8 text") from None
    docs = [d for d in docs if d.strip()]
    if not docs:
        what = "no non-empty .txt files" if path.is_dir() else "no text"
        raise ConfigError(f"data.corpus: {corpus}: {what}")
    return docs


def _jsonl_text(line: str, path: Path, number: int) -> str:
    try:
        text = json.loads(line)["text"]
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f'data.corpus: {path}, line {number}: expected {{"text": ...}}') from None
    if not isinstance(text, str):
        raise ConfigError(f'data.corpus: {path}, line {number}: "text" is not a string')
    return text


def _split_text(text: str) -> list[str]:
    """A text file's documents: separated by lines holding only ``---``."""
    docs, current = [], []
    for line in text.splitlines(keepends=True):
        if line.strip() == DOC_SEPARATOR:
            docs.append("".join(current))
            current = []
        else:
            current.append(line)
    docs.append("".join(current))
    return docs


def split_documents(docs: list[str], val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[str]]:
    """Whole documents into train / val / test: a seeded shuffle, then documents go to the
    validation split until it holds ``val_fraction`` of the characters, then to the test split
    likewise; the rest train. Each split gets at least one document."""
    need = 3 if test_fraction > 0 else 2
    if len(docs) < need:
        raise ConfigError(f"data.corpus: {len(docs)} document(s); the splits need at least {need} (train, validation{', test' if need == 3 else ''})")
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    total = sum(len(d) for d in docs)
    splits: dict[str, list[str]] = {"val": [], "test": [], "train": []}
    goals = [("val", val_fraction), ("test", test_fraction)]
    i = 0
    for split, fraction in goals:
        if fraction <= 0:
            continue
        size = 0
        while i < len(order) - 1 and (not splits[split] or size < fraction * total):
            splits[split].append(docs[order[i]])
            size += len(docs[order[i]])
            i += 1
    splits["train"] = [docs[j] for j in order[i:]]
    if not splits["train"]:
        raise ConfigError("data.corpus: no document is left to train on; lower data.val_fraction / data.test_fraction or give more documents")
    return splits


def build_tokenizer(kind: str, vocab_size: int, train_docs: list[str]):
    """A ``transformers`` fast tokenizer built here: ``byte`` (256 byte tokens + EOS) or a
    byte-level ``bpe`` of ``vocab_size`` trained on ``train_docs``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if kind == "byte":
        alphabet = pre_tokenizers.ByteLevel.alphabet()
        byte_to_char = _byte_chars()
        vocab = {byte_to_char[b]: b for b in range(256)}
        assert set(vocab) == set(alphabet)
        tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    else:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        trainer = trainers.BpeTrainer(vocab_size=vocab_size - 1, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tok.train_from_iterator(train_docs, trainer=trainer)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([EOS])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS, model_max_length=1_000_000)


def _byte_chars() -> dict[int, str]:
    """GPT-2's byte -> printable character map (what the byte-level pre-tokenizer emits)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def load_tokenizer(checkpoint: str):
    """The tokenizer of a teacher checkpoint directory, offline; ConfigError naming it."""
    from transformers import AutoTokenizer

    if not any((Path(checkpoint) / name).is_file() for name in TOKENIZER_FILES):
        raise ConfigError(f"teacher.checkpoint: {checkpoint}: no tokenizer ({' or '.join(TOKENIZER_FILES)}); the student uses the teacher's")
    try:
        return AutoTokenizer.from_pretrained(checkpoint, local_files_only=True)
    except Exception as err:
        raise ConfigError(f"teacher.checkpoint: {checkpoint}: no tokenizer could be loaded ({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None


def to_sequences(docs: list[str], tokenizer, seq_len: int, max_tokens: int | None = None) -> tuple[torch.Tensor, int]:
    """The documents tokenized, each followed by EOS, concatenated and cut into rows of
    ``seq_len`` tokens (the last partial row dropped): (int64 (N, seq_len), tokens)."""
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for enc in tokenizer(docs, add_special_tokens=False)["input_ids"]:
        ids.extend(enc)
        if eos is not None:
            ids.append(eos)
        if max_tokens is not None and len(ids) >= max_tokens:
            ids = ids[:max_tokens]
            break
    n = len(ids) // seq_len
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len), len(ids)


@dataclass
class TextData:
    """The study's token sequences and tokenizer, loaded once on the driver and shared with
    every trial through Ray's object store."""

    train: torch.Tensor  # (N, seq_len) int64
    val: torch.Tensor
    test: torch.Tensor
    tokenizer: Any  # a transformers tokenizer (the teacher's)
    source: str
    documents: dict[str, int]
    tokens: dict[str, int]

    @property
    def seq_len(self) -> int:
        return int(self.train.shape[1])

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def split(self, name: str) -> torch.Tensor:
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def summary(self) -> str:
        d, t = self.documents, self.tokens
        return (
            f"{self.source}: {sum(d.values())} documents ({d['train']} train / {d['val']} val / {d['test']} test), "
            f"{t['train']:,} / {t['val']:,} / {t['test']:,} tokens, {len(self.train):,} training sequences of {self.seq_len}, "
            f"vocabulary {self.vocab_size:,}"
        )


def load_corpus(cfg: CorpusConfig, teacher_checkpoint: str | None) -> TextData:
    """Documents -> splits -> tokenizer (the teacher checkpoint's, or one built here) -> sequences."""
    docs = read_documents(cfg.corpus)
    splits = split_documents(docs, cfg.val_fraction, cfg.test_fraction, cfg.split_seed)
    if teacher_checkpoint is not None:
        tokenizer = load_tokenizer(teacher_checkpoint)
        kind = f"the teacher's tokenizer ({type(tokenizer).__name__})"
    else:
        tokenizer = build_tokenizer(cfg.tokenizer, cfg.vocab_size, splits["train"])
        kind = f"{cfg.tokenizer} tokenizer"
    seqs, tokens = {}, {}
    for name in ("train", "val", "test"):
        seqs[name], tokens[name] = to_sequences(splits[name], tokenizer, cfg.seq_len, cfg.max_train_tokens if name == "train" else None)
    for name, label in (("train", "training"), ("val", "validation")):
        if len(seqs[name]) == 0:
            raise ConfigError(
                f"data.corpus: the {label} split holds {tokens[name]} tokens, fewer than data.seq_len ({cfg.seq_len}); give more text or a shorter seq_len"
            )
    source = "pydoc_topics (the Python documentation)" if cfg.corpus == EMBEDDED_CORPUS else cfg.corpus
    return TextData(
        train=seqs["train"],
        val=seqs["val"],
        test=seqs["test"],
        tokenizer=tokenizer,
        source=f"{source}, {kind}",
        documents={k: len(v) for k, v in splits.items()},
        tokens=tokens,
    )
