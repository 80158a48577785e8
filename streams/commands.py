"""Commands that need the embedded infrastructure or the generator: demo, generate, benchmark."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["register"]


def register(add: Callable[..., Any]) -> None:
    """Add the commands to the ``touchpoint`` parser."""
