"""The YAML reference table of the README, generated from the config models so the two
cannot drift apart (``python scripts/yaml_reference.py``; a test checks the README)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from .config import StudyBase, StudyConfig, TextStudyConfig


def _searchable(annotation: Any) -> bool:
    # tunable fields are unions that admit a distribution (see _tunable.tunable)
    return "Choice" in repr(annotation)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return ""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value).replace("'", "")


def rows(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    out = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        if _is_model(annotation):
            out.extend(rows(annotation, key + "."))
            continue
        kind = "searchable" if _searchable(annotation) else "fixed"
        out.append((key, _default(field), kind, (field.description or "").replace("\n", " ")))
    return out


def markdown(model: type[BaseModel] = StudyConfig, shared: bool = True) -> str:
    """The reference table of a study file; ``shared=False`` leaves out the sections every
    task's file has (search, latency, execution, constraints), listed with the image table."""
    common = set(StudyBase.model_fields) - {"task", "objectives"}
    lines = ["| key | default | fixed or searched | meaning |", "|---|---|---|---|"]
    for key, default, kind, doc in rows(model):
        if not shared and key.split(".")[0] in common:
            continue
        lines.append(f"| `{key}` | `{default}` | {kind} | {doc} |")
    return "\n".join(lines) + "\n"


def text_markdown() -> str:
    """The reference table of a language_modeling study file (its own sections)."""
    return markdown(TextStudyConfig, shared=False)
