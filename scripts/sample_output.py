"""Regenerate the README's "Sample output" from a real run of its first command.

    python scripts/sample_output.py            # ~2 minutes on a 2-core CPU: teacher + 24 trials
    python scripts/sample_output.py --check    # only say whether the README block has every kind of line a run prints now

The default study (``search_spaces/digits.yaml``) runs in a fresh temporary folder, so the
teacher is trained as on a fresh clone, with stdout not a terminal (one line per trial, as
in CI and logs). The block between the README's ``## Sample output`` heading and the next
heading is rewritten: the run's lines (trial lines 4 to n-1 elided), and a sentence about
the front's smallest student computed from the run's ``pareto.csv`` and ``study.json``.
tests/test_e2e.py checks that every kind of line a study prints appears in the block.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
HEADING = "## Sample output"
TRIAL_LINE = re.compile(r"^\[\d+/\d+\] trial ")


def line_kind(line: str) -> str | None:
    """What kind of line a study prints (its first two words before any figure or colon:
    ``teacher outputs``, ``Pareto front``), None for the lines of a table or an elision."""
    line = line.strip()
    if not line or line[0] in "┏┃┡│└━/" or line == "...":  # a table, an elision, a path wrapped onto its own line
        return None
    if TRIAL_LINE.match(line):
        return "[n/N] trial"
    words = re.split(r"[\d:(]", line, maxsplit=1)[0].split()[:2]
    return " ".join(words) or None


def sample_block(readme: str) -> str:
    start = readme.index(HEADING)
    fence = readme.index("```\n", start)
    return readme[fence + 4 : readme.index("\n```", fence + 4)]


def _elide(lines: list[str]) -> list[str]:
    trial_at = [i for i, line in enumerate(lines) if TRIAL_LINE.match(line)]
    if len(trial_at) <= 4:
        return lines
    keep = set(trial_at[:3]) | {trial_at[-1]}
    out, elided = [], False
    for i, line in enumerate(lines):
        if i in trial_at and i not in keep:
            if not elided:
                out.append("...")
                elided = True
            continue
        out.append(line)
    return out


def _sentence(results: Path) -> str:
    """The front's smallest student against the teacher, in one sentence."""
    summary = json.loads((results / "study.json").read_text())
    front = pd.read_csv(results / "pareto.csv")
    small = front.sort_values("params").iloc[0]
    teacher = summary["teacher"]["metrics"]
    share = small["params"] / teacher["params"]
    speed = teacher["latency_ms"] / small["latency_ms"] if teacher.get("latency_ms") else None
    faster = f" and {speed:.1f}× lower latency at batch 1 on one thread" if speed else ""
    return (
        f"Trial {int(small['number'])}'s {small['family']} keeps {small['accuracy']:.3f} validation / {small['test_accuracy']:.3f} test accuracy "
        f"(teacher: {teacher['accuracy']:.3f} / {teacher['test_accuracy']:.3f}) with {share:.2%} of the teacher's parameters{faster}."
    )


def run_study() -> tuple[str, str]:
    with tempfile.TemporaryDirectory(prefix="autodistill-sample-") as tmp:
        shutil.copy(ROOT / "search_spaces" / "digits.yaml", Path(tmp) / "digits.yaml")
        cli = Path(sys.executable).with_name("autodistill")
        command = [str(cli)] if cli.exists() else [sys.executable, "-m", "autodistill"]
        run = subprocess.run([*command, "search", "digits.yaml"], cwd=tmp, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
        if run.returncode != 0:
            sys.exit(f"sample_output: the study failed (exit {run.returncode}):\n{run.stderr[-2000:]}")
        results = Path(tmp) / "results" / "digits"
        out = run.stdout.replace(tmp, "/tmp/fresh")
        return out, _sentence(results)


def rewrite(readme: str, output: str, sentence: str) -> str:
    start = readme.index(HEADING)
    fence = readme.index("```\n", start)
    end = readme.index("\n```", fence + 4) + len("\n```\n")
    after = readme.index("\n## ", end)
    lines = _elide([line.rstrip() for line in output.rstrip("\n").splitlines()])
    tail = readme[end:after].strip("\n").split("\n\n", 1)  # the sentence, then what follows it
    rest = "\n\n" + tail[1] if len(tail) > 1 else ""
    return readme[:fence] + "```\n" + "\n".join(lines) + "\n```\n\n" + sentence + rest + "\n" + readme[after:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="run the study and compare kinds of line, change nothing")
    args = parser.parse_args()
    output, sentence = run_study()
    readme = README.read_text()
    missing = sorted({k for k in map(line_kind, output.splitlines()) if k} - {k for k in map(line_kind, sample_block(readme).splitlines()) if k})
    if args.check:
        print("the README's sample output is current" if not missing else f"missing from the README's sample output: {missing}")
        sys.exit(1 if missing else 0)
    README.write_text(rewrite(readme, output, sentence))
    print(f"rewrote the sample output in {README} ({len(output.splitlines())} lines of output)")


if __name__ == "__main__":
    main()
