"""DDSketch helpers: bulk insertion, accuracy and the codec."""

from __future__ import annotations

import math
import random

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promptprof_processor.windows.sketches import (
    BIN_LIMIT,
    EXACT_MAX,
    RELATIVE_ACCURACY,
    Distribution,
    add_values,
    decode_sketch,
    encode_sketch,
    merge_into,
    new_sketch,
    quantile,
    sketch_bins,
)

QUANTILES = (0.0, 0.1, 0.5, 0.9, 0.95, 0.99, 1.0)
value_st = st.floats(min_value=1e-3, max_value=1e7)
values_st = st.lists(value_st, min_size=1, max_size=300)


def exact_quantile(values: list[float], q: float) -> float:
    """The value DDSketch approximates: the element at rank floor(q * (n - 1))."""
    ordered = sorted(values)
    return ordered[math.floor(q * (len(ordered) - 1))]


def assert_within_accuracy(approx: float | None, exact: float) -> None:
    assert approx is not None
    assert abs(approx - exact) <= RELATIVE_ACCURACY * exact * (1 + 1e-9)


@given(values_st)
def test_percentiles_within_one_percent_of_exact(values: list[float]) -> None:
    sketch = new_sketch()
    add_values(sketch, values, None)
    for q in QUANTILES:
        assert_within_accuracy(quantile(sketch, q), exact_quantile(values, q))


@given(st.lists(st.tuples(value_st, st.integers(1, 5)), min_size=1, max_size=100))
def test_weighted_values_act_as_repeated_values(pairs: list[tuple[float, int]]) -> None:
    sketch = new_sketch()
    add_values(sketch, [v for v, _ in pairs], [float(w) for _, w in pairs])
    expanded = [v for v, w in pairs for _ in range(w)]
    assert sketch.count == len(expanded)
    assert sketch.sum == pytest.approx(math.fsum(expanded))
    for q in QUANTILES:
        assert_within_accuracy(quantile(sketch, q), exact_quantile(expanded, q))


def test_bulk_insertion_matches_ddsketch_add() -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(5, 1.5) for _ in range(5000)] + [0.0] * 10
    bulk, single = new_sketch(), new_sketch()
    for start in range(0, len(values), 500):
        add_values(bulk, values[start : start + 500], None)
    for value in values:
        single.add(value)
    encoded, expected = encode_sketch(bulk), encode_sketch(single)
    assert encoded["s"] == pytest.approx(expected.pop("s"))
    encoded.pop("s")
    assert encoded == expected


def test_zeros_go_to_the_zero_bucket() -> None:
    sketch = new_sketch()
    add_values(sketch, [0.0, 0.0, 5.0], [1.0, 2.0, 1.0])
    assert sketch._zero_count == 3.0
    assert sketch.count == 4.0
    assert quantile(sketch, 0.5) == 0.0
    assert quantile(sketch, 1.0) == 5.0


def test_all_zero_values() -> None:
    sketch = new_sketch()
    add_values(sketch, [0, 0], None)
    assert (sketch.count, quantile(sketch, 0.99)) == (2.0, 0.0)


def test_negative_values_are_rejected() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        add_values(new_sketch(), [1.0, -1.0], None)


def test_empty_input_changes_nothing() -> None:
    sketch = new_sketch()
    add_values(sketch, [], None)
    assert sketch.count == 0
    assert quantile(sketch, 0.5) is None


def test_percentiles_never_exceed_the_exact_range() -> None:
    sketch = new_sketch()
    add_values(sketch, [80.0], None)
    assert quantile(sketch, 0.0) == quantile(sketch, 1.0) == 80.0


def test_extreme_range_collapses_lowest_bins_and_keeps_high_quantiles() -> None:
    values = [10.0**e for e in range(-300, 300)]
    sketch = new_sketch()
    add_values(sketch, values[:300], None)
    add_values(sketch, values[300:], None)
    store = sketch._store
    assert store.is_collapsed
    assert store.max_key - store.min_key < BIN_LIMIT
    assert_within_accuracy(quantile(sketch, 0.99), exact_quantile(values, 0.99))
    restored = decode_sketch(orjson.loads(orjson.dumps(encode_sketch(sketch))))
    assert encode_sketch(restored) == encode_sketch(sketch)


@given(values_st, values_st)
@settings(max_examples=50)
def test_codec_round_trip_is_exact_and_stays_mergeable(a: list[float], b: list[float]) -> None:
    first, second = new_sketch(), new_sketch()
    add_values(first, a, None)
    add_values(second, b, None)
    encoded = orjson.loads(orjson.dumps(encode_sketch(first)))
    restored = decode_sketch(encoded)
    assert encode_sketch(restored) == encode_sketch(first)
    first.merge(second)
    restored.merge(second)
    assert encode_sketch(restored) == encode_sketch(first)
    add_values(first, b, None)
    add_values(restored, b, None)
    assert encode_sketch(restored) == encode_sketch(first)


def test_empty_sketch_round_trip() -> None:
    sketch = decode_sketch(encode_sketch(new_sketch()))
    assert sketch.count == 0
    assert quantile(sketch, 0.5) is None
    add_values(sketch, [3.0], None)
    assert quantile(sketch, 0.5) == 3.0


def test_decode_rejects_another_accuracy() -> None:
    data = encode_sketch(new_sketch())
    data["a"] = 0.02
    with pytest.raises(ValueError, match="relative accuracy"):
        decode_sketch(data)


def test_merging_a_collapsed_sketch_marks_the_target_collapsed() -> None:
    wide, target = new_sketch(), new_sketch()
    add_values(wide, [1e-200, 1e200], None)
    add_values(target, [1.0], None)
    merge_into(target, wide)
    assert target._store.is_collapsed
    assert target.count == 3
    assert quantile(target, 1.0) == 1e200


small_values = st.lists(st.one_of(st.just(0.0), st.floats(1e-12, 1e-9), value_st),
                        min_size=1, max_size=EXACT_MAX)
weights_st = st.one_of(st.none(), st.sampled_from([1.0, 2.0, 20.0, 100.0]))


def distribution_of(parts: list[list[float]], weight: float | None) -> Distribution:
    kept = Distribution()
    for part in parts:
        kept.add(part, None if weight is None else [weight] * len(part))
    return kept


@settings(max_examples=300, deadline=None)
@given(st.lists(small_values, min_size=1, max_size=4), weights_st)
def test_values_kept_as_given_answer_as_their_sketch_does(
    parts: list[list[float]], weight: float | None
) -> None:
    parts = [p[: EXACT_MAX // 4] for p in parts]
    kept = distribution_of(parts, weight)
    sketched = distribution_of(parts, weight)
    sketched.sketch()  # the same values, in a real sketch
    for q in QUANTILES:
        assert kept.quantile(q) == sketched.quantile(q)
    assert (kept.max, kept.count) == (sketched.max, pytest.approx(sketched.count))
    assert kept.sum == pytest.approx(sketched.sum, rel=1e-12, abs=1e-300)
    assert sketch_bins(kept.encode()) == sketch_bins(sketched.encode())
    mine, theirs = encode_sketch(decode_sketch(kept.encode())), sketched.encode()
    assert mine.pop("s") == pytest.approx(theirs.pop("s"), rel=1e-12, abs=1e-300)
    assert mine.pop("b") == theirs.pop("b")
    assert mine == pytest.approx(theirs)


@given(small_values, small_values)
def test_kept_values_merge_and_survive_their_state(first: list[float], second: list[float]) -> None:
    merged = Distribution()
    merged.merge(distribution_of([first], None))
    merged.merge(Distribution.from_state(orjson.loads(orjson.dumps(
        distribution_of([second], 3.0).state()))))
    direct = distribution_of([first], None)
    direct.add(second, [3.0] * len(second))
    assert merged.encode() == direct.encode()


def test_past_the_limit_values_go_into_a_sketch() -> None:
    kept = distribution_of([[1.0] * EXACT_MAX], None)
    assert "v" in kept.state()
    kept.add([2.0], None)
    assert "v" not in kept.state() and kept.count == EXACT_MAX + 1
    with pytest.raises(ValueError, match="non-negative"):
        Distribution().add([-1.0], None)
