"""Registries are plain dicts; ``lookup`` turns an unknown name into a message listing the
valid ones."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


class UnknownNameError(ValueError):
    """A dataset, backbone, method, task or validator name that is not registered."""


def lookup(registry: dict[str, T], name: str, kind: str) -> T:
    if name not in registry:
        raise UnknownNameError(f"unknown {kind} {name!r}; valid: {', '.join(sorted(registry))}")
    return registry[name]
