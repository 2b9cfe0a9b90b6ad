"""The names the library offers, pinned: a name added to or removed from a public namespace
is a change to the API and must show up here (as httpx pins its exports)."""

from __future__ import annotations

import importlib

import pytest

PUBLIC = {
    "promptprof": [
        "Call", "ConfigError", "KafkaSettings", "ProducerSettings", "Profiler", "Settings",
        "TopicSettings", "configure", "get_profiler",
        "load_settings", "profile", "shutdown", "track",
    ],
    "promptprof.export": [
        "Cycle", "ExportStats", "Exporter", "KafkaExporter", "SpoolingExporter",
        "default_exporter",
    ],
    "promptprof.integrations": [
        "OVERRIDE_KWARG", "PromptOverride", "use_prompt", "wrap_anthropic", "wrap_openai",
    ],
    "promptprof.testing": ["InMemoryExporter"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_each_public_namespace_offers_exactly_its_names(module: str) -> None:
    namespace = importlib.import_module(module)
    assert sorted(namespace.__all__) == sorted(PUBLIC[module])
    for name in namespace.__all__:
        assert getattr(namespace, name) is not None, name
