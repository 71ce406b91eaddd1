"""The corpus of a language-model study: documents, whole-document splits, tokenizers, sequences."""

import json

import pytest

from autodistill._errors import ConfigError
from autodistill.config import CorpusConfig
from autodistill.tasks.language_modeling.corpus import build_tokenizer, load_corpus, read_documents, split_documents, to_sequences


def test_the_embedded_corpus_is_pythons_documentation_split_by_document():
    docs = read_documents("pydoc_topics")
    assert len(docs) >= 50 and sum(map(len, docs)) > 300_000
    splits = split_documents(docs, 0.1, 0.1, seed=0)
    assert sum(len(v) for v in splits.values()) == len(docs)
    seen = [d for part in splits.values() for d in part]
    assert len(set(seen)) == len(set(docs))  # every document in exactly one split
    total = sum(map(len, docs))
    assert sum(map(len, splits["val"])) >= 0.1 * total and sum(map(len, splits["test"])) >= 0.1 * total
    assert split_documents(docs, 0.1, 0.1, seed=0) == splits  # seeded
    assert split_documents(docs, 0.1, 0.1, seed=1) != splits


def test_the_byte_tokenizer_is_exact_on_any_text():
    tok = build_tokenizer("byte", 0, [])
    assert len(tok) == 257 and tok.eos_token_id == 256
    text = "naïve café — 北京 🐍\n\ttabs"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids == list(text.encode("utf-8"))
    assert tok.decode(ids) == text


def test_a_bpe_tokenizer_is_trained_on_the_training_split():
    docs = read_documents("pydoc_topics")[:20]
    tok = build_tokenizer("bpe", 400, docs)
    assert len(tok) == 400
    text = docs[0][:500]
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) < len(text.encode()) / 1.5 and tok.decode(ids) == text


def test_sequences_are_documents_with_eos_cut_to_length():
    tok = build_tokenizer("byte", 0, [])
    seqs, tokens = to_sequences(["abc", "de"], tok, 3)
    assert tokens == 7 and seqs.tolist() == [[97, 98, 99], [256, 100, 101]]  # the last partial row (eos) is dropped


def test_corpus_files_of_each_kind(tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_text("first doc\n---\nsecond doc\n---\nthird doc\n")
    assert read_documents(str(txt)) == ["first doc\n", "second doc\n", "third doc\n"]
    jsonl = tmp_path / "b.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": t}) for t in ("x", "y")) + "\n")
    assert read_documents(str(jsonl)) == ["x", "y"]
    folder = tmp_path / "docs"
    folder.mkdir()
    for name in ("2.txt", "1.txt"):
        (folder / name).write_text(f"doc {name}")
    assert read_documents(str(folder)) == ["doc 1.txt", "doc 2.txt"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.txt", "data.corpus: not found: "),
        (lambda p: (p / "empty.txt").write_text("  \n") and p / "empty.txt", "data.corpus: .*empty.txt: no text"),
        (lambda p: (p / "bad.jsonl").write_text('{"txt": 1}\n') and p / "bad.jsonl", 'line 1: expected {"text": ...}'),
        (lambda p: (p / "two.txt").write_text("a\n---\nb\n") and p / "two.txt", "2 document\\(s\\); the splits need at least 3"),
    ],
)
def test_a_corpus_that_cannot_be_used_is_one_line_naming_it(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(ConfigError, match=message):
        load_corpus(CorpusConfig(corpus=str(path)), None)


def test_a_split_shorter_than_one_sequence_is_named(tmp_path):
    path = tmp_path / "small.txt"
    path.write_text("a long training document " * 50 + "\n---\nshort\n---\nalso short\n")
    with pytest.raises(ConfigError, match=r"the (training|validation) split holds \d+ tokens, fewer than data.seq_len \(128\)"):
        load_corpus(CorpusConfig(corpus=str(path)), None)
