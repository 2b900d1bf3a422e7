"""`geartrain worker` (not written yet)."""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    """Add the `worker` subcommand (placeholder until it is written)."""
