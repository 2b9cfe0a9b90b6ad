"""Test helpers shipped with promptprof: :class:`InMemoryExporter` for a service's own tests,
and fake LLM providers (:mod:`promptprof.testing._fake_providers`) for tests and demos."""

from promptprof.testing._memory import InMemoryExporter

__all__ = ["InMemoryExporter"]
