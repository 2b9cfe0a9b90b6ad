"""Test helpers shipped with promptprof: :class:`InMemoryExporter` for a service's own tests.

(``promptprof.testing._fake_providers``, a local server speaking the OpenAI and Anthropic wire
formats, is internal: the project's own tests use it.)"""

from promptprof.testing._memory import InMemoryExporter

__all__ = ["InMemoryExporter"]
