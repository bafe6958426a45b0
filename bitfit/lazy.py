"""Names a package loads from its modules on first use (PEP 562): importing the package, or
one light name of it, does not import its heavy modules (torch, MLflow), so a command line
answers ``--help`` and its mistakes at once."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_names(package: str, modules: dict[str, str]
               ) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """A package's ``__all__``, ``__getattr__`` and ``__dir__`` for the names that ``modules``
    lists (a module, absolute or relative to ``package`` -> its names, separated by spaces)."""
    namespace = sys.modules[package].__dict__
    where = {name: module for module, names in modules.items() for name in names.split()}

    def getattr_(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = where[name]
        value = getattr(importlib.import_module(
            module if module.startswith("bitfit") else f"{package}.{module}"), name)
        namespace[name] = value  # found once
        return value

    def dir_() -> list[str]:
        return sorted(set(namespace) | set(where))

    return sorted(where), getattr_, dir_
