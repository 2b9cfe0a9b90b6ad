"""Series identity and the cardinality cap."""

from __future__ import annotations

import orjson

from promptprof_processor.windows.series import OVERFLOW, Series, SeriesRegistry


def series(tenant: str, prompt: str = "p") -> Series:
    return Series("svc", prompt, "v1", "m", (tenant, ""))


def test_admits_up_to_the_cap_then_overflows() -> None:
    registry = SeriesRegistry(["tenant", "region"], max_series_per_prompt=2)
    assert registry.resolve(series("a"), 1, 1) == series("a")
    assert registry.resolve(series("b"), 1, 1) == series("b")
    assert registry.resolve(series("c"), 1, 5) == Series("svc", "p", "v1", "m", (OVERFLOW,) * 2)
    assert registry.resolve(series("a"), 2, 1) == series("a")
    assert registry.overflow_events == {("svc", "p"): 5}
    assert registry.series_count("svc", "p") == 2


def test_the_cap_is_per_prompt() -> None:
    registry = SeriesRegistry(["tenant", "region"], max_series_per_prompt=1)
    assert registry.resolve(series("a", "p"), 1, 1) == series("a", "p")
    assert registry.resolve(series("a", "q"), 1, 1) == series("a", "q")
    assert registry.overflow_events == {}


def test_expiry_frees_places() -> None:
    registry = SeriesRegistry(["tenant", "region"], max_series_per_prompt=1)
    registry.resolve(series("a"), 10, 1)
    registry.expire(before_ns=10)
    assert registry.resolve(series("b"), 11, 1).labels == (OVERFLOW, OVERFLOW)
    registry.expire(before_ns=11)
    assert registry.series_count("svc", "p") == 0
    assert registry.resolve(series("b"), 12, 1) == series("b")


def test_without_label_dimensions_nothing_is_capped() -> None:
    registry = SeriesRegistry([], max_series_per_prompt=1)
    for version in ("v1", "v2", "v3"):
        plain = Series("svc", "p", version, "m", ())
        assert registry.resolve(plain, 1, 1) == plain
    assert registry.overflow_events == {}


def test_state_round_trip() -> None:
    registry = SeriesRegistry(["tenant", "region"], max_series_per_prompt=1)
    registry.resolve(series("a"), 5, 1)
    registry.resolve(series("b"), 6, 3)
    restored = SeriesRegistry(["tenant", "region"], max_series_per_prompt=1)
    restored.apply(orjson.loads(orjson.dumps(registry.snapshot())))
    assert restored.snapshot() == registry.snapshot()
    assert restored.resolve(series("c"), 7, 1).labels == (OVERFLOW, OVERFLOW)
    assert restored.overflow_events == {("svc", "p"): 4}


def test_changes_name_only_the_prompts_that_changed_and_rebuild_the_registry() -> None:
    registry = SeriesRegistry(["tenant", "region"], max_series_per_prompt=2)
    registry.resolve(series("a"), 5, 1)
    restored = SeriesRegistry(["tenant", "region"], max_series_per_prompt=2)
    restored.apply(registry.changes())
    assert registry.changes() == []
    registry.resolve(series("b"), 6, 1)
    registry.expire(6)
    changes = registry.changes()
    assert [entry[:2] for entry in changes] == [["svc", "p"]]
    restored.apply(changes)
    assert restored.snapshot() == registry.snapshot()
    assert restored.series_count("svc", "p") == 1


def test_label_tags_skip_empty_values() -> None:
    assert series("a").label_tags(["tenant", "region"]) == {"tenant": "a"}
