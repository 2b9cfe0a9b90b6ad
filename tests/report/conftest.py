"""Fixtures of the report tests: ``filled``, ``retained`` and ``deployment`` as in the
dashboard tests (the same databases)."""

from __future__ import annotations

from dashboards.conftest import deployment, filled, retained

__all__ = ["deployment", "filled", "retained"]
