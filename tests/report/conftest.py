"""Fixtures of the report tests: ``filled`` as in the dashboard tests (the same database)."""

from __future__ import annotations

from dashboards.conftest import filled

__all__ = ["filled"]
