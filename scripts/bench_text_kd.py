"""What distillation buys a small language model, and what the top-k cache costs in quality.

    python scripts/bench_text_kd.py            # ~20 min on a 2-core CPU
    python scripts/bench_text_kd.py --quick    # a smoke run (~1 min)
    python scripts/bench_text_kd.py --report   # re-print the table from the JSON

Three Qwen2 students (1 x 32, 2 x 64, 3 x 96: layers x hidden) learn from the default text
study's teacher (``search_spaces/text.yaml``: 4 x 128, trained once and cached) on the
Python documentation, each for the same number of steps, with five recipes:

- ``CE only``: next-token cross-entropy, no teacher;
- ``KD (top-32 cache)``: forward KL from the cached top-32 logits, alpha 0.7, T 1;
- ``KD + hidden + attention``: the same, plus the hidden-state MSE (through a projection) and
  the attention KL, layers mapped by relative depth (the teacher's hidden states and attention
  matrices cached, float16, as a study caches them within ``execution.teacher_cache_gb``);
- ``KD + synthetic``: the same as KD, a quarter of each batch the teacher's own continuations
  (256 of them, top-p 0.9, temperature 0.7, written once);
- ``KD (full logits)``: the same as KD with no cache: the teacher runs on every batch and KD
  reads all its logits (``distill.top_k: 0``) -- the reference of the cache.

Validation and test perplexity are mean +- std over ``--seeds`` seeds (every recipe runs the
same seeds); for each size the recipe with the best mean validation perplexity is marked (the
test split is never used to choose). Time is the training steps' own, per step.

Writes ``results/benchmarks/text_kd.json`` and prints the README table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _bench import OUT_DIR, machine, mean_std, write  # noqa: E402

from autodistill.config import TextDistillConfig, TextTrainConfig  # noqa: E402
from autodistill.loading import load_config  # noqa: E402
from autodistill.tasks.language_modeling import models  # noqa: E402
from autodistill.tasks.language_modeling.corpus import load_corpus, quiet_transformers  # noqa: E402
from autodistill.tasks.language_modeling.teacher import internals_of, prepare_teacher, teacher_targets  # noqa: E402
from autodistill.tasks.language_modeling.train import TextTargets, evaluate, train_lm  # noqa: E402

SIZES = {
    "1 x 32": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2, "intermediate_size": 96},
    "2 x 64": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 192},
    "3 x 96": {"hidden_size": 96, "num_hidden_layers": 3, "num_attention_heads": 3, "num_key_value_heads": 1, "intermediate_size": 288},
}
KD = {"alpha": 0.7, "kd_loss": "forward_kl"}
RECIPES = {
    "CE only": ({"alpha": 0.0}, "none"),
    "KD (top-32 cache)": (KD, "cache"),
    "KD + hidden + attention": ({**KD, "hidden_weight": 1.0, "attention_weight": 1.0, "attention_loss": "kl"}, "cache"),
    "KD + synthetic": ({**KD, "synthetic_ratio": 0.25}, "cache"),
    "KD (full logits)": (KD, "live"),
}
SYNTHETIC = 256


def run(args) -> dict:
    quiet_transformers()
    overrides = {"execution.results": args.results, "data.synthetic.count": SYNTHETIC}
    config = load_config(Path(__file__).resolve().parent.parent / "search_spaces" / "text.yaml", overrides)
    data = load_corpus(config.data, None)
    teacher, record = prepare_teacher(config, data, log=lambda m: print(f"  {m}", flush=True))
    print(f"teacher: val perplexity {record['metrics']['perplexity']:.3f}, test {record['metrics']['test_perplexity']:.3f} [{record['source']}]", flush=True)
    cached = teacher_targets(config, data, teacher, log=lambda m: print(f"  {m}", flush=True))
    started = time.perf_counter()
    internals = internals_of(teacher, torch.cat([data.train, cached.synthetic]), True, True, "cpu")  # what a study caches within teacher_cache_gb
    print(f"  teacher hidden states and attention matrices cached in {time.perf_counter() - started:.0f} s", flush=True)
    topk = (cached.values, cached.indices, cached.tail, cached.synthetic, cached.synthetic_cache)
    sources = {
        "none": None,
        "cache": TextTargets(*topk, hidden=internals["hidden"], attentions=internals["attentions"], teacher_config=teacher.config.to_dict()),
        "live": TextTargets(None, None, None, teacher=teacher),
    }
    train_cfg = TextTrainConfig(epochs=args.epochs, steps_per_epoch=args.steps, batch_size=16, lr=5e-3)
    sizes = dict(list(SIZES.items())[: 1 if args.quick else None])
    rows = []
    for size, shape in sizes.items():
        for recipe, (distill, source) in RECIPES.items():
            val, test, step_ms = [], [], []
            for seed in range(args.seeds):
                cfg = TextDistillConfig(**distill)
                attention = "eager" if cfg.attention_weight > 0 else "sdpa"  # the attention loss reads the student's matrices
                student = models.build(models.student_config(teacher.config, shape), seed, attention)
                history = train_lm(student, data.train, data.val, train_cfg, cfg, sources[source], seed=seed)
                models.set_attention(student, "sdpa")
                val.append(evaluate(student, data.val)["perplexity"])
                test.append(evaluate(student, data.test)["perplexity"])
                step_ms.append(1e3 * sum(h.steps_s for h in history) / (args.epochs * args.steps))
                print(f"  {size:7} {recipe:24} seed {seed}: val {val[-1]:.3f}, test {test[-1]:.3f}, {step_ms[-1]:.1f} ms/step", flush=True)
            rows.append(
                {
                    "size": size,
                    "recipe": recipe,
                    "params_non_embedding": models.param_counts(student)["params_non_embedding"],
                    "val_perplexity": mean_std(val),
                    "test_perplexity": mean_std(test),
                    "ms_per_step": mean_std(step_ms),
                }
            )
    for size in sizes:
        mine = [r for r in rows if r["size"] == size]
        best = min(mine, key=lambda r: r["val_perplexity"]["mean"])
        for r in mine:
            r["best_on_validation"] = r is best
    return {
        "machine": machine(),
        "teacher": {k: record["metrics"][k] for k in ("perplexity", "test_perplexity", "params_non_embedding")},
        "steps": args.epochs * args.steps,
        "batch": "16 x 128 tokens",
        "seeds": args.seeds,
        "synthetic": SYNTHETIC,
        "rows": rows,
    }


def table(result: dict) -> str:
    t = result["teacher"]
    lines = [
        f"Teacher: validation perplexity {t['perplexity']:.3f}, test {t['test_perplexity']:.3f}, {t['params_non_embedding']:,} non-embedding parameters; "
        f"{result['steps']} steps of {result['batch']} per student, {result['seeds']} seeds.",
        "",
        "| student (layers x hidden) | recipe | validation perplexity | test perplexity | ms / step |",
        "|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        mark = " (best on validation)" if r.get("best_on_validation") else ""
        v, te, ms = r["val_perplexity"], r["test_perplexity"], r["ms_per_step"]
        lines.append(
            f"| {r['size']} ({r['params_non_embedding']:,}) | {r['recipe']}{mark} | {v['mean']:.3f} ± {v['std']:.3f} | {te['mean']:.3f} ± {te['std']:.3f} | {ms['mean']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100, help="steps per epoch")
    parser.add_argument("--quick", action="store_true", help="one size, one seed, a few steps")
    parser.add_argument("--report", action="store_true", help="print the table of the last run")
    parser.add_argument("--results", default=str(Path(__file__).resolve().parent.parent / "results"), help="where the teacher is cached")
    args = parser.parse_args()
    if args.report:
        print(table(json.loads((OUT_DIR / "text_kd.json").read_text())))
        return
    if args.quick:
        args.seeds, args.epochs, args.steps = 1, 1, 5
    started = time.perf_counter()
    result = run(args)
    result["wall_s"] = time.perf_counter() - started
    path = write("text_kd" + ("_quick" if args.quick else ""), result)
    print(table(result))
    print(f"wrote {path} ({result['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
