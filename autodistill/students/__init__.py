"""Student families behind a registry (cnn, resnet, mobilenet, vit)."""

from . import cnn, mobilenet, resnet, vit  # noqa: F401  (registration)
from ._registry import Family, build_student, get_family, list_families, make_spec, register_family

__all__ = ["Family", "build_student", "make_spec", "get_family", "list_families", "register_family"]
