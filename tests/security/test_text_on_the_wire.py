"""Prompt and response text never reaches Kafka unless ``capture_text`` is on, and then only
after the redaction hook: checked on the raw record bytes read back from a real Tansu broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
from aiokafka import AIOKafkaConsumer

from promptprof import Profiler, Settings, load_settings
from promptprof._envelope import decode_record
from promptprof._record import Redactor
from promptprof.integrations import wrap_openai
from promptprof.testing._fake_providers import FakeProviderServer, FakeReply
from promptprof_tools.stack import TansuBroker

pytestmark = pytest.mark.integration

PROMPT = "PROMPT-zebra-7f3a91 my card is 4111-1111-1111-1111"
RESPONSE = "RESPONSE-okapi-c0ffee the secret plan"
WRAPPED_PROMPT = "WRAPPED-PROMPT-narwhal-5d2e"
WRAPPED_RESPONSE = "WRAPPED-RESPONSE-axolotl-9b1c"
SECRET_BITS = (PROMPT, RESPONSE, WRAPPED_PROMPT, WRAPPED_RESPONSE, "zebra", "okapi", "narwhal",
               "axolotl", "4111-1111")


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeProviderServer]:
    with FakeProviderServer() as server:
        yield server


def _profiler(bootstrap: str, topic: str, redact: Redactor | None = None,
              **producer: Any) -> Profiler:
    settings: Settings = load_settings(
        kafka={"bootstrap_servers": bootstrap, "request_timeout_ms": 3000},
        topics={"calls": topic},
        producer={"metrics_log_interval_s": 0, "linger_ms": 5, "compression": "none",
                  **producer},
    )
    return Profiler(settings, redact=redact)


def _raw_records(bootstrap: str, topic: str, expected: int, timeout_s: float = 30.0) -> bytes:
    """Every record's key, value and headers, concatenated, once ``expected`` events arrived."""

    async def run() -> bytes:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
            group_id=f"security-{time.monotonic_ns()}",
        )
        await consumer.start()
        chunks: list[bytes] = []
        count = 0
        deadline = time.monotonic() + timeout_s
        try:
            while count < expected and time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for record in records:
                        count += len(decode_record(record.value or b""))
                        chunks.extend([record.key or b"", record.value or b""])
                        chunks.extend(k.encode() + v for k, v in record.headers)
        finally:
            await consumer.stop()
        assert count >= expected, f"only {count} of {expected} events arrived"
        return b"\n".join(chunks)

    return asyncio.run(run())


def _calls(prof: Profiler, server: FakeProviderServer) -> None:
    """Two calls by hand (one failing) and two through the wrapped OpenAI client."""
    with prof.track("by-hand", "v1", model="gpt-4o", provider="openai") as call:
        call.set_text(PROMPT, RESPONSE)
    with pytest.raises(RuntimeError), prof.track("by-hand", "v1") as call:
        call.set_text(PROMPT, None)
        raise RuntimeError("boom")
    # no usage in the answers: the wrapper hands the text over to count tokens locally
    server.script(FakeReply(text=WRAPPED_RESPONSE, usage=False),
                  FakeReply(text=WRAPPED_RESPONSE, usage=False))
    client = wrap_openai(
        openai.OpenAI(base_url=server.openai_base_url, api_key="test", max_retries=0),
        prompt_id="wrapped", version="v1", profiler=prof,
    )
    try:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": WRAPPED_PROMPT}]
        )
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": WRAPPED_PROMPT}],
            stream=True,
        )
        for _ in stream:
            pass
    finally:
        client.close()
    assert prof.close(15)
    assert prof.stats()["sent_events"] == 4


def _topic(unique_name: Callable[[str], str]) -> str:
    return unique_name("calls")


def test_no_text_on_the_wire_by_default(
    kafka_broker: TansuBroker, fake_server: FakeProviderServer,
    unique_name: Callable[[str], str],
) -> None:
    topic = _topic(unique_name)
    prof = _profiler(kafka_broker.bootstrap, topic)
    assert prof.settings.producer.capture_text is False
    _calls(prof, fake_server)
    wire = _raw_records(kafka_broker.bootstrap, topic, 4)
    assert b"by-hand" in wire and b"wrapped" in wire  # the events did arrive
    assert b"gen_ai.usage.input_tokens" in wire  # tokens were counted from the text...
    for bit in SECRET_BITS:  # ...which itself stayed in the process
        assert bit.encode() not in wire, bit
    assert b"gen_ai.input.messages" not in wire and b"gen_ai.output.messages" not in wire


def test_a_redact_hook_is_never_applied_when_capture_is_off(
    kafka_broker: TansuBroker, fake_server: FakeProviderServer,
    unique_name: Callable[[str], str],
) -> None:
    seen: list[str] = []

    def redact(text: str) -> str:
        seen.append(text)
        return "REDACTED"

    topic = _topic(unique_name)
    _calls(_profiler(kafka_broker.bootstrap, topic, redact=redact), fake_server)
    wire = _raw_records(kafka_broker.bootstrap, topic, 4)
    assert seen == [] and b"REDACTED" not in wire


def test_with_capture_only_the_redacted_text_is_sent(
    kafka_broker: TansuBroker, fake_server: FakeProviderServer,
    unique_name: Callable[[str], str],
) -> None:
    seen: list[str] = []

    def redact(text: str) -> str:
        seen.append(text)
        return f"[redacted {len(text)} chars]"

    topic = _topic(unique_name)
    prof = _profiler(kafka_broker.bootstrap, topic, redact=redact, capture_text=True)
    _calls(prof, fake_server)
    wire = _raw_records(kafka_broker.bootstrap, topic, 4)
    assert b"gen_ai.input.messages" in wire and b"gen_ai.output.messages" in wire
    assert f"[redacted {len(PROMPT)} chars]".encode() in wire
    assert f"[redacted {len(WRAPPED_RESPONSE)} chars]".encode() in wire
    for bit in SECRET_BITS:
        assert bit.encode() not in wire, bit
    assert any(PROMPT in s for s in seen) and any(WRAPPED_PROMPT in s for s in seen)


def test_with_capture_and_no_hook_the_text_is_sent_as_is(
    kafka_broker: TansuBroker, fake_server: FakeProviderServer,
    unique_name: Callable[[str], str],
) -> None:
    """The control: the checks above would see the text if it were sent."""
    topic = _topic(unique_name)
    _calls(_profiler(kafka_broker.bootstrap, topic, capture_text=True), fake_server)
    wire = _raw_records(kafka_broker.bootstrap, topic, 4)
    for bit in (PROMPT, RESPONSE, WRAPPED_PROMPT, WRAPPED_RESPONSE):
        assert bit.encode() in wire, bit
