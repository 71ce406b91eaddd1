"""The README's commands and YAML reference stay in step with the code and CI."""

import re
from pathlib import Path

from autodistill._reference import markdown, text_markdown

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def first_block() -> list[str]:
    match = re.search(r"```bash\n(.*?)```", README, re.S)
    assert match, "README needs a bash block"
    return [line for line in match.group(1).splitlines() if line.strip()]


def test_readme_opens_with_exactly_two_commands():
    lines = first_block()
    assert len(lines) == 2
    assert "autodistill search search_spaces/digits.yaml" in lines[0]
    assert "pytest" in lines[1]
    assert README.index("```bash") < README.index("\n## ")


def test_ci_runs_the_readme_test_command():
    script = (ROOT / ".ci" / "run").read_text()
    assert "sed -n 2p" in script and "README.md" in script


def test_yaml_reference_is_current():
    assert markdown() in README, "regenerate with: python scripts/yaml_reference.py"
    assert text_markdown() in README, "regenerate with: python scripts/yaml_reference.py"
