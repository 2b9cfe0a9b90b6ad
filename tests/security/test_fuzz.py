"""Property fuzzing (hypothesis) of everything that parses outside input: the event decoder
(decode_record, validate_events, PartitionRun.take) and the suite, prompt, dataset,
thresholds, alert-rules and config file parsers. Arbitrary bytes, arbitrary JSON trees and
mutated valid documents: nothing crashes; a bad input gives the parser's own error, with a
message, or a dead letter with a reason."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import orjson
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promptprof import Call, ConfigError, load_settings
from promptprof._envelope import EnvelopeError, decode_record, encode_envelope
from promptprof._profiler import make_spec
from promptprof._record import EventBuilder
from promptprof_compare.dataset import load_dataset
from promptprof_compare.inputs import InputError
from promptprof_compare.prompts import parse_prompt
from promptprof_compare.stats import ThresholdsError
from promptprof_compare.stats import load_settings as load_thresholds
from promptprof_compare.suite import load_suite
from promptprof_processor.alerts.rules import RulesError, load_rules, parse_rules
from promptprof_processor.ingest.validation import validate_events
from promptprof_processor.settings import WindowSettings
from tests.processor.runs import MemoryLog, Runs

# PROMPTPROF_FUZZ_EXAMPLES=5000 for a longer run by hand
FUZZ = settings(max_examples=int(os.environ.get("PROMPTPROF_FUZZ_EXAMPLES", "200")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# -- strategies ---------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
)
json_trees = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(st.text(max_size=10), inner, max_size=5)),
    max_leaves=30,
)
# YAML mappings may have keys of any scalar type (null, numbers, booleans)
yaml_keys = st.one_of(st.text(max_size=10), st.none(), st.booleans(), st.integers(-5, 5))
yaml_trees = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(yaml_keys, inner, max_size=5)),
    max_leaves=30,
)


def valid_event(seed: int = 0, **extra: Any) -> dict[str, Any]:
    """A call event as the producer builds it."""
    spec = make_spec(f"p{seed % 3}", "v1", model="gpt-4o", provider="openai",
                     labels={"tenant": "t1"})
    call = Call(None, spec, 1.0)
    call.set_usage(10 + seed, 5)
    call.end_ns = call.start_ns + 1_000_000 * (1 + seed % 50)
    if seed % 4 == 0:
        call.set_error("RateLimitError")
    if seed % 5 == 0:
        call.quality, call.quality_metric = 0.5, "custom"
    return {**EventBuilder("svc", "dev", False, None).build(call), **extra}


EVENT_KEYS = sorted(valid_event())


@st.composite
def mutated_events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event with some fields replaced by arbitrary values, removed, or added."""
    event = valid_event(draw(st.integers(0, 1000)))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["replace", "delete", "add", "kind"]))
        key = draw(st.sampled_from(EVENT_KEYS))
        if action == "replace":
            event[key] = draw(json_trees)
        elif action == "delete":
            event.pop(key, None)
        elif action == "add":
            event[draw(st.text(max_size=12))] = draw(json_trees)
        else:
            event["kind"] = draw(st.sampled_from(["quality", "call", None, 1, "x"]))
    return event


event_lists = st.lists(st.one_of(mutated_events(), st.builds(valid_event, st.integers(0, 99)),
                                 json_trees), max_size=8)


@st.composite
def records(draw: st.DrawFn) -> bytes:
    """Bytes a record may hold: noise, JSON of any shape, or envelopes of (mutated) events."""
    kind = draw(st.sampled_from(["bytes", "json", "envelope", "envelope-mutated", "bare"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "json":
        return orjson.dumps(draw(json_trees))
    if kind == "bare":
        return orjson.dumps(draw(mutated_events()))
    if kind == "envelope":
        return encode_envelope(draw(event_lists))
    doc: dict[str, Any] = {"envelope": "promptprof.batch", "envelope_version": 1,
                           "events": draw(event_lists)}
    key = draw(st.sampled_from(["envelope", "envelope_version", "events"]))
    doc[key] = draw(json_trees)
    raw = orjson.dumps(doc)
    if draw(st.booleans()):  # and flip a byte
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1:]
    return raw


# -- the event decoder --------------------------------------------------------------------------


@FUZZ
@given(records())
def test_decode_record_returns_a_list_or_raises_envelope_error(value: bytes) -> None:
    try:
        events = decode_record(value)
    except EnvelopeError as exc:
        assert str(exc)
    else:
        assert isinstance(events, list)


@FUZZ
@given(event_lists)
def test_validate_events_splits_every_event_into_good_or_bad(raws: list[Any]) -> None:
    good, bad = validate_events(raws)
    assert len(good) + len(bad) == len(raws)
    for _, reason in bad:
        assert isinstance(reason, str) and reason


def test_valid_events_are_all_good() -> None:
    raws = [valid_event(i) for i in range(50)]
    good, bad = validate_events(raws)
    assert (len(good), bad) == (50, [])


@FUZZ
@given(st.lists(records(), min_size=1, max_size=5), st.integers(0, 3))
def test_partition_windows_never_crash_and_give_reasons(values: list[bytes], part: int) -> None:
    windows = Runs(WindowSettings(), max_record_bytes=4096)
    for value in [*values, None]:
        outcome = windows.handle(part, value)
        for letter in outcome.dead:
            assert isinstance(letter.value, bytes) and isinstance(letter.reason, str)
            assert letter.reason and not letter.reason.startswith("internal error")
        assert outcome.accepted >= 0
        # what is accepted or dead-lettered accounts for every event of a decodable record
        try:
            events = decode_record(value) if value is not None and len(value) <= 4096 else None
        except EnvelopeError:
            events = None
        if events is not None:
            assert outcome.accepted + len(outcome.dead) == len(events)
    saved = MemoryLog()
    saved.checkpoint(windows.run(part))
    assert saved.restore(part, WindowSettings()).windows.stats == windows.run(part).windows.stats


def test_oversized_and_empty_records_are_dead_lettered_with_a_reason() -> None:
    windows = Runs(WindowSettings(), max_record_bytes=100)
    big = windows.handle(0, b"{" * 1000)
    assert [d.reason for d in big.dead] == ["oversized record: 1000 bytes > 100"]
    assert [d.reason for d in windows.handle(0, None).dead] == ["empty record"]
    deep = Runs(WindowSettings()).handle(0, b"[" * 5000 + b"]" * 5000)
    assert deep.dead and deep.dead[0].reason.startswith("not JSON")


# -- file parsers -------------------------------------------------------------------------------


def _yaml(tree: Any) -> str:
    return yaml.safe_dump(tree, allow_unicode=True)


def _mutate(draw: st.DrawFn, valid: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``valid`` with values at random depths replaced, removed or added."""
    document: dict[str, Any] = orjson.loads(orjson.dumps(valid))
    for _ in range(draw(st.integers(1, 3))):
        node = document
        while True:  # walk down into a random nested mapping, or stop here
            children = [k for k, v in node.items() if isinstance(v, dict)]
            if not children or draw(st.booleans()):
                break
            node = node[draw(st.sampled_from(sorted(children)))]
        key = draw(st.sampled_from([*sorted(node), "extra"]))
        if draw(st.booleans()):
            node[key] = draw(json_trees)
        else:
            node.pop(key, None)
    return document


def _noise_or_yaml(draw: st.DrawFn, valid: dict[str, Any]) -> str:
    kind = draw(st.sampled_from(["text", "tree", "mutated", "cut"]))
    if kind == "text":
        return draw(st.text(max_size=200))
    if kind == "tree":
        return _yaml(draw(yaml_trees))
    if kind == "mutated":
        document: dict[Any, Any] = _mutate(draw, valid)
        if draw(st.booleans()):
            document[draw(yaml_keys)] = draw(yaml_trees)
        return _yaml(document)
    text = _yaml(valid)
    return text[: draw(st.integers(0, len(text)))]


VALID_PROMPT = {"id": "faq", "model": "gpt-4o-mini", "provider": "openai",
                "system": "Be brief.", "template": "Answer: {question}",
                "params": {"temperature": 0}}
VALID_SUITE = {"name": "s", "prompt_dir": "prompts", "dataset": "d.jsonl",
               "provider": {"type": "simulated"}, "repetitions": 2, "concurrency": 2,
               "evaluators": [{"type": "contains", "reference_field": "keywords"}]}
VALID_THRESHOLDS = {"alpha": 0.05}
VALID_RULES = {"defaults": {"slo": {"latency_p95_ms": {"max": 2000}}},
               "prompts": {"faq": {"slo": {"error_rate": {"max": 0.05}}}}}
VALID_CONFIG = {"kafka": {"bootstrap_servers": "127.0.0.1:9092", "sasl_password": "pw"},
                "producer": {"sample_rate": 0.5, "capture_text": True},
                "influx": {"url": "https://influx.example.com", "verify_ssl": True}}


@FUZZ
@given(st.data())
def test_prompt_parser_raises_only_input_error(data: st.DataObject) -> None:
    text = data.draw(_file_text(VALID_PROMPT))
    try:
        prompt = parse_prompt(text, "fuzz.yaml")
    except InputError as exc:
        assert str(exc).startswith("fuzz.yaml: ") and exc.problem
    else:
        assert prompt.id and prompt.version


def _in_file(text: str, name: str, check: Any) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / name
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        check(path)


def _file_text(valid: dict[str, Any]) -> Any:
    return st.composite(lambda d: _noise_or_yaml(d, valid))()


@FUZZ
@given(_file_text(VALID_SUITE))
def test_suite_parser_raises_only_input_error(text: str) -> None:
    def check(path: Path) -> None:
        try:
            load_suite(path)
        except InputError as exc:
            assert str(path) in str(exc) and exc.problem

    _in_file(text, "suite.yaml", check)


@FUZZ
@given(st.lists(st.one_of(st.text(max_size=60).filter(lambda s: "\n" not in s and "\r" not in s),
                          json_trees.map(lambda t: orjson.dumps(t).decode())), max_size=6))
def test_dataset_parser_raises_only_input_error(lines: list[str]) -> None:
    def check(path: Path) -> None:
        try:
            items = load_dataset(path)
        except InputError as exc:
            assert str(path) in str(exc) and exc.problem
        else:
            assert items

    _in_file("\n".join(lines), "d.jsonl", check)


@FUZZ
@given(_file_text(VALID_THRESHOLDS))
def test_thresholds_parser_raises_only_thresholds_error(text: str) -> None:
    def check(path: Path) -> None:
        try:
            load_thresholds(path)
        except ThresholdsError as exc:
            assert str(path) in str(exc) and exc.problem

    _in_file(text, "thresholds.yaml", check)


@FUZZ
@given(st.one_of(yaml_trees, st.composite(lambda d: _mutate(d, VALID_RULES))()))
def test_rules_parser_raises_only_rules_error(document: Any) -> None:
    try:
        parse_rules(document, "fuzz-rules")
    except RulesError as exc:
        assert "fuzz-rules" in str(exc)


@FUZZ
@given(_file_text(VALID_RULES))
def test_rules_file_loader_raises_only_rules_error(text: str) -> None:
    def check(path: Path) -> None:
        try:
            load_rules(path)
        except RulesError as exc:
            assert str(path) in str(exc)

    _in_file(text, "rules.yaml", check)


@FUZZ
@given(_file_text(VALID_CONFIG))
def test_config_loader_raises_only_config_error(text: str) -> None:
    def check(path: Path) -> None:
        try:
            load_settings(path)
        except ConfigError as exc:
            assert str(exc)

    _in_file(text, "promptprof.yaml", check)


def test_config_keys_that_are_not_names_are_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "promptprof.yaml"
    for text in ("~: 1\n", "1: x\n", "true: x\n"):  # found by fuzz/fuzz_parsers.py
        path.write_text(text)
        try:
            load_settings(path)
        except ConfigError as exc:
            assert "top-level keys must be names" in str(exc)
        else:
            raise AssertionError(f"accepted {text!r}")


def test_non_finite_numbers_in_json_text_are_dead_lettered() -> None:
    raw = b'{"schema_version": 1, "promptprof.latency_ms": 1e999}'  # orjson: not JSON
    outcome = Runs(WindowSettings()).handle(0, raw)
    assert outcome.accepted == 0 and len(outcome.dead) == 1 and outcome.dead[0].reason
