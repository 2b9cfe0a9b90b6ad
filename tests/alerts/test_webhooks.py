"""Webhooks: URL checks, secrets, signing, payload formats, and deliveries to real receivers
(signature checked on the receiving side; failing, slow, redirecting and absent receivers)."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest

from promptprof_processor.alerts import Alert, ReceiverSettings, RetryPolicy, WebhookReceiver
from promptprof_processor.alerts import webhooks as webhooks_module
from promptprof_processor.alerts.webhooks import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Receiver,
    WebhookConfigError,
    WebhookSender,
    render,
    sign,
    validate_url,
    verify_signature,
)
from promptprof_tools.stack import free_port

from .conftest import SECRET, RecordingLog

FAST = RetryPolicy(attempts=3, initial_backoff_s=0.01, max_backoff_s=0.05, timeout_s=2.0)


def receiver_for(server: WebhookReceiver, fmt: str = "generic", secret: str | None = SECRET,
                 path: str = "") -> Receiver:
    settings = ReceiverSettings(
        name=f"r-{fmt}", format=fmt, url=server.url + path, secret=secret  # type: ignore[arg-type]
    )
    return Receiver.resolve(settings)


# -- URLs and secrets ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "allowed", "error"),
    [
        ("ftp://hooks.example.com/x", [], "scheme must be http or https"),
        ("file:///etc/passwd", [], "scheme must be http or https"),
        ("https:///no-host", [], "no host"),
        ("http://[::1", [], "not valid"),
        ("https://evil.example.org/x", ["hooks.example.com"], "not in allowed_hosts"),
        ("https://example.com/x", ["*.example.com"], "not in allowed_hosts"),
    ],
)
def test_bad_urls_are_refused(url: str, allowed: list[str], error: str) -> None:
    with pytest.raises(WebhookConfigError, match=error):
        validate_url(url, allowed, receiver="r1")


def test_allowed_hosts_match_names_and_subdomain_wildcards() -> None:
    assert validate_url("https://hooks.example.com/a", ["HOOKS.example.com"]) == "hooks.example.com"
    assert validate_url("http://a.b.example.com:8080/", ["*.example.com"]) == "a.b.example.com"
    assert validate_url("http://127.0.0.1:9/x") == "127.0.0.1"


def test_errors_never_show_the_url_path_or_query() -> None:
    with pytest.raises(WebhookConfigError) as caught:
        validate_url("https://evil.example.org/T0/B0/TOKEN123?key=SECRETQ", ["ok.example"])
    assert "TOKEN123" not in str(caught.value) and "SECRETQ" not in str(caught.value)


def test_url_and_secret_from_environment_or_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOOK_URL", "https://hooks.example.com/services/T0/B0/TOKEN")
    key = tmp_path / "key"
    key.write_text(SECRET + "\n")
    settings = ReceiverSettings(name="slack", format="slack", url_env="HOOK_URL", secret_file=key)
    receiver = Receiver.resolve(settings, ["hooks.example.com"])
    assert receiver.url.endswith("/TOKEN") and receiver.secret == SECRET.encode()
    assert "TOKEN" not in repr(receiver) and SECRET not in repr(receiver)
    assert SECRET not in repr(ReceiverSettings(name="x", url="http://h/", secret=SECRET))


def test_missing_secrets_name_the_variable_or_file(tmp_path: Path) -> None:
    settings = ReceiverSettings(name="r", url="http://h/", secret_env="NO_SUCH_VARIABLE_X")
    with pytest.raises(WebhookConfigError, match=r"NO_SUCH_VARIABLE_X .* is not set"):
        Receiver.resolve(settings)
    settings = ReceiverSettings(name="r", url_file=tmp_path / "nope")
    with pytest.raises(WebhookConfigError, match="cannot read its url file"):
        Receiver.resolve(settings)


def test_receiver_settings_need_one_url_and_at_most_one_secret() -> None:
    with pytest.raises(ValueError, match="exactly one of url, url_env, url_file"):
        ReceiverSettings(name="r")
    with pytest.raises(ValueError, match="at most one of secret"):
        ReceiverSettings(name="r", url="http://h/", secret="a", secret_env="B")


# -- signing ------------------------------------------------------------------------------------


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"a": 1}'
    expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign(SECRET.encode(), 1700000000, body) == f"sha256={expected}"


def test_verify_rejects_tampering_other_keys_and_stale_timestamps() -> None:
    body = b'{"a": 1}'
    now = int(time.time())
    headers = {SIGNATURE_HEADER: sign(SECRET.encode(), now, body), TIMESTAMP_HEADER: str(now)}
    lower = {k.lower(): v for k, v in headers.items()}
    assert verify_signature(SECRET.encode(), headers, body)
    assert verify_signature(SECRET.encode(), lower, body)
    assert not verify_signature(SECRET.encode(), headers, b'{"a": 2}')
    assert not verify_signature(b"other", headers, body)
    assert not verify_signature(SECRET.encode(), headers, body, now=now + 301)
    assert not verify_signature(SECRET.encode(), {SIGNATURE_HEADER: "x"}, body)


# -- formats ------------------------------------------------------------------------------------


def test_generic_body_is_the_alert_event(
    alerts: list[Alert], receiver_factory: Callable[..., WebhookReceiver]
) -> None:
    receiver = receiver_for(receiver_factory())
    assert render(receiver, alerts[0], 3600) == alerts[0].to_json()


def test_slack_message(
    alerts: list[Alert], receiver_factory: Callable[..., WebhookReceiver]
) -> None:
    body = orjson.loads(render(receiver_for(receiver_factory(), "slack"), alerts[0], 3600))
    assert body["text"].startswith(":warning: [FIRING] warning anomaly.")
    assert alerts[0].message.split(":")[0] in body["text"]
    fields = {f["text"].split("\n")[0] for f in body["blocks"][1]["fields"]}
    assert fields == {"*Observed*", "*Baseline*", "*Threshold*", "*Window*"}
    assert alerts[0].alert_id in body["blocks"][2]["elements"][0]["text"]


def test_alertmanager_bodies(
    alerts: list[Alert], receiver_factory: Callable[..., WebhookReceiver]
) -> None:
    server = receiver_factory()
    firing = next(a for a in alerts if a.state == "firing")
    resolved = next(a for a in alerts if a.state == "resolved")
    (posted,) = orjson.loads(render(receiver_for(server, "alertmanager"), firing, 3600))
    labels = posted["labels"]
    assert labels["alertname"] == f"promptprof_{firing.rule.replace('.', '_')}"
    assert labels["prompt_version"] == "v1" and labels["severity"] == "warning"
    assert posted["annotations"]["summary"] == firing.message
    assert posted["startsAt"] < posted["endsAt"]
    assert posted["endsAt"] == webhooks_module.iso(firing.window.end_ns + 7200 * 10**9)
    (done,) = orjson.loads(render(receiver_for(server, "alertmanager"), resolved, 3600))
    assert done["endsAt"] == webhooks_module.iso(resolved.window.end_ns)
    hook = orjson.loads(render(receiver_for(server, "alertmanager_webhook"), firing, 3600))
    assert (hook["version"], hook["status"], hook["receiver"]) == (
        "4", "firing", "r-alertmanager_webhook"
    )
    assert hook["alerts"][0]["fingerprint"] == firing.fingerprint
    assert hook["alerts"][0]["endsAt"] == "0001-01-01T00:00:00Z"


# -- delivery -----------------------------------------------------------------------------------


async def test_delivery_is_signed_and_verified_by_the_receiver(
    alerts: list[Alert], receiver_factory: Callable[..., WebhookReceiver]
) -> None:
    server = receiver_factory()
    sender = WebhookSender(FAST)
    try:
        result = await sender.deliver(receiver_for(server), alerts[0])
    finally:
        await sender.close()
    assert (result.ok, result.attempts, result.status) == (True, 1, 200)
    (got,) = server.received
    assert got.verified is True
    headers = {k.lower(): v for k, v in got.headers.items()}
    assert headers[IDEMPOTENCY_HEADER.lower()] == alerts[0].alert_id
    assert headers["x-promptprof-event"] == "firing"
    mac = hmac.new(SECRET.encode(), headers["x-promptprof-timestamp"].encode() + b"." + got.body,
                   hashlib.sha256).hexdigest()
    assert headers["x-promptprof-signature"] == f"sha256={mac}"
    assert Alert.model_validate(got.json()) == alerts[0]


async def test_a_wrong_key_is_refused_by_the_receiver_and_not_retried(
    alerts: list[Alert], receiver_factory: Callable[..., WebhookReceiver]
) -> None:
    server = receiver_factory()
    sender = WebhookSender(FAST)
    try:
        result = await sender.deliver(receiver_for(server, secret="wrong-key"), alerts[0])
    finally:
        await sender.close()
    assert (result.ok, result.attempts, result.status) == (False, 1, 401)
    assert server.received == [] and len(server.rejected) == 1


async def test_server_errors_are_retried_then_given_up(
    alerts: list[Alert], receiver_factory: Callable[..., WebhookReceiver]
) -> None:
    server = receiver_factory()
    server.status = 500
    sender = WebhookSender(FAST)
    try:
        result = await sender.deliver(receiver_for(server), alerts[0])
    finally:
        await sender.close()
    assert (result.ok, result.attempts, result.reason) == (False, 3, "answered 500")
    assert server.requests == 3 and sender.failed_attempts == 3


async def test_a_transient_failure_is_retried_until_it_succeeds(
    alerts: list[Alert], receiver_factory: Callable[..., WebhookReceiver]
) -> None:
    server = receiver_factory()
    server.fail_first = 2
    sender = WebhookSender(FAST)
    try:
        result = await sender.deliver(receiver_for(server), alerts[0])
    finally:
        await sender.close()
    assert (result.ok, result.attempts) == (True, 3)
    assert len(server.received) == 1 and server.requests == 3


async def test_a_slow_receiver_times_out(
    alerts: list[Alert], receiver_factory: Callable[..., WebhookReceiver]
) -> None:
    server = receiver_factory()
    server.delay_s = 1.5
    policy = RetryPolicy(attempts=2, initial_backoff_s=0.01, max_backoff_s=0.01, timeout_s=0.3)
    sender = WebhookSender(policy)
    started = time.monotonic()
    try:
        result = await sender.deliver(receiver_for(server), alerts[0])
    finally:
        await sender.close()
    assert not result.ok and result.attempts == 2
    assert "no complete answer within 0.3 s" in result.reason
    assert time.monotonic() - started < 1.5


async def test_an_absent_receiver_is_retried_and_fails(alerts: list[Alert]) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook/TOKEN123"
    receiver = Receiver.resolve(ReceiverSettings(name="gone", url=url))
    sender = WebhookSender(FAST)
    log = RecordingLog()
    original = webhooks_module.log
    webhooks_module.log = log  # type: ignore[assignment]
    try:
        result = await sender.deliver(receiver, alerts[0])
    finally:
        webhooks_module.log = original
        await sender.close()
    assert not result.ok and result.attempts == 3 and "ConnectError" in result.reason
    assert log.events() == ["promptprof.webhook_attempt_failed"] * 3
    assert "TOKEN123" not in log.text() and "TOKEN123" not in result.reason


async def test_redirects_are_not_followed(
    alerts: list[Alert], receiver_factory: Callable[..., WebhookReceiver]
) -> None:
    server, target = receiver_factory(), receiver_factory()
    server.redirect_to = target.url
    sender = WebhookSender(FAST)
    try:
        result = await sender.deliver(receiver_for(server), alerts[0])
    finally:
        await sender.close()
    assert (result.ok, result.attempts, result.status) == (False, 1, 307)
    assert "redirects are not followed" in result.reason
    assert target.requests == 0


async def test_a_huge_answer_is_not_read_whole(
    alerts: list[Alert], receiver_factory: Callable[..., WebhookReceiver]
) -> None:
    server = receiver_factory()
    server.response_bytes = 20_000_000
    sender = WebhookSender(FAST, max_response_bytes=1024)
    started = time.monotonic()
    try:
        result = await sender.deliver(receiver_for(server), alerts[0])
    finally:
        await sender.close()
    assert result.ok and time.monotonic() - started < 2.0


async def test_retry_after_is_honoured_within_the_cap(alerts: list[Alert]) -> None:
    answers = iter([429, 200])
    slept: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        status = next(answers)
        return httpx.Response(status, headers={"Retry-After": "30"}, stream=httpx.ByteStream(b""))

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    sender = WebhookSender(FAST, client=client, sleep=sleep)
    receiver = Receiver.resolve(ReceiverSettings(name="r", url="http://h.example/x"))
    result = await sender.deliver(receiver, alerts[0])
    await client.aclose()
    assert result.ok and result.attempts == 2 and slept == [FAST.max_backoff_s]
