"""Secrets (Kafka SASL password, InfluxDB token and password, webhook keys and URLs) never show
in logs, reprs, error messages, stdout or stderr, even when the things they unlock fail."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from promptprof import ConfigError, Profiler, Settings, load_settings
from promptprof_processor.alerts import (
    Alert,
    AlertEngine,
    ReceiverSettings,
    RetryPolicy,
    WebhookReceiver,
    parse_rules,
)
from promptprof_processor.alerts.settings import AlertSettings
from promptprof_processor.alerts.synthetic import Change, synthetic_windows
from promptprof_processor.alerts.webhooks import Receiver, WebhookConfigError, WebhookSender
from promptprof_processor.settings import InfluxSettings, ProcessorSettings
from promptprof_processor.sink.influx import (
    InfluxWriteError,
    RetryingWriter,
    V1Writer,
    V2Writer,
)
from promptprof_tools.stack import TansuBroker, free_port

from .conftest import LogText

SASL_PASSWORD = "SASL-pw-Quokka-0x5eed"
INFLUX_TOKEN = "INFLUX-tok-Pangolin-77aa"
INFLUX_PASSWORD = "INFLUX-pw-Tapir-31"
HOOK_KEY = "HMAC-key-Wombat-42"
HOOK_TOKEN = "T0KEN-Capybara-9e9e"
ALL = (SASL_PASSWORD, INFLUX_TOKEN, INFLUX_PASSWORD, HOOK_KEY, HOOK_TOKEN)


def assert_clean(*texts: object) -> None:
    for text in texts:
        rendered = str(text)
        for secret in ALL:
            assert secret not in rendered, f"{secret} leaked into: {rendered[:500]}"


# -- configuration ------------------------------------------------------------------------------


def test_settings_reprs_and_dumps_mask_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTPROF_KAFKA__SASL_PASSWORD", SASL_PASSWORD)
    monkeypatch.setenv("PROMPTPROF_INFLUX__TOKEN", INFLUX_TOKEN)
    monkeypatch.setenv("PROMPTPROF_INFLUX__PASSWORD", INFLUX_PASSWORD)
    settings = load_settings(cls=ProcessorSettings)
    assert settings.kafka.sasl_password is not None
    assert settings.kafka.sasl_password.get_secret_value() == SASL_PASSWORD
    assert_clean(repr(settings), str(settings), settings.model_dump(),
                 settings.model_dump_json(), repr(settings.kafka), repr(settings.influx))


def test_secrets_come_from_files_in_the_secrets_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "promptprof_kafka__sasl_password").write_text(SASL_PASSWORD + "\n")
    (tmp_path / "PROMPTPROF_INFLUX__TOKEN").write_text(INFLUX_TOKEN)
    monkeypatch.setenv("PROMPTPROF_SECRETS_DIR", str(tmp_path))
    settings = load_settings(cls=ProcessorSettings)
    assert settings.kafka.sasl_password is not None and settings.influx.token is not None
    assert settings.kafka.sasl_password.get_secret_value() == SASL_PASSWORD
    assert settings.influx.token.get_secret_value() == INFLUX_TOKEN
    monkeypatch.setenv("PROMPTPROF_INFLUX__TOKEN", "from-env")  # the environment wins
    reloaded = load_settings(cls=ProcessorSettings)
    token = reloaded.influx.token
    assert token is not None and token.get_secret_value() == "from-env"
    monkeypatch.setenv("PROMPTPROF_SECRETS_DIR", str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match="PROMPTPROF_SECRETS_DIR"):
        load_settings()


@pytest.mark.parametrize(
    "yaml_text",
    [
        f'kafka:\n  sasl_password: "{SASL_PASSWORD}\n',  # unterminated quote
        f"kafka:\n  sasl_password: {SASL_PASSWORD}\n  x: [unclosed\n",
        f"influx:\n\ttoken: {INFLUX_TOKEN}\n",  # a tab
        f"influx:\n  token: {INFLUX_TOKEN}\n   password: {INFLUX_PASSWORD}\n",  # bad indent
        f"kafka: {{sasl_password: {SASL_PASSWORD}\n",
    ],
)
def test_a_malformed_config_file_error_does_not_quote_secrets(
    tmp_path: Path, yaml_text: str
) -> None:
    path = tmp_path / "promptprof.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert str(path) in message and "line" in message
    assert_clean(message, repr(caught.value))


def test_invalid_values_error_does_not_quote_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "promptprof.yaml"
    path.write_text(
        f"kafka:\n  sasl_password: {{nested: {SASL_PASSWORD}}}\n"
        f"  security_protocol: {SASL_PASSWORD}\n"
        f"  sasl_mechanism: {INFLUX_PASSWORD}\n"
        f"influx:\n  token: [{INFLUX_TOKEN}]\n  verify_ssl: {INFLUX_TOKEN}\n"
        f"  timeout_s: {INFLUX_PASSWORD}\n"
    )
    monkeypatch.setenv("PROMPTPROF_INFLUX__PASSWORD", INFLUX_PASSWORD)
    monkeypatch.setenv("PROMPTPROF_KAFKA__REQUEST_TIMEOUT_MS", SASL_PASSWORD)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, ProcessorSettings)
    message = str(caught.value)
    for field in ("kafka.sasl_password", "kafka.security_protocol", "influx.token",
                  "influx.verify_ssl", "kafka.request_timeout_ms"):
        assert field in message
    assert_clean(message)


def test_alert_settings_errors_and_reprs_mask_webhook_secrets() -> None:
    url = f"https://hooks.example.com/services/{HOOK_TOKEN}?token={HOOK_TOKEN}"
    settings = AlertSettings(receivers=[
        ReceiverSettings(name="ok", url=url, secret=HOOK_KEY),  # type: ignore[arg-type]
    ])
    assert_clean(repr(settings), settings.model_dump(), settings.model_dump_json())
    with pytest.raises(ValueError) as caught:
        ReceiverSettings(name="two", url=url, url_env="X", secret=HOOK_KEY)  # type: ignore[arg-type]
    assert "give exactly one of url" in str(caught.value)
    assert_clean(str(caught.value))
    with pytest.raises(ValueError) as nested:
        AlertSettings.model_validate(
            {"receivers": [{"name": "two", "url": url, "url_env": "X", "secret": HOOK_KEY}]}
        )
    assert_clean(str(nested.value))
    with pytest.raises(ValueError) as whole:
        Settings.model_validate({"kafka": {"sasl_password": {"v": SASL_PASSWORD}}})
    assert "kafka.sasl_password" in str(whole.value)
    assert_clean(str(whole.value))
    for bad in (f"ftp://hooks.example.com/{HOOK_TOKEN}", f"https:///{HOOK_TOKEN}",
                f"http://[::1/{HOOK_TOKEN}", f"https://evil.example.org/{HOOK_TOKEN}",
                f"https://user:{HOOK_TOKEN}@evil.example.org/x"):
        with pytest.raises(WebhookConfigError) as refused:
            Receiver.resolve(ReceiverSettings(name="bad", url=bad),  # type: ignore[arg-type]
                             ["hooks.example.com"])
        assert_clean(str(refused.value))


def test_processor_config_errors_do_not_quote_webhook_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"https://hooks.example.com/{HOOK_TOKEN}"
    monkeypatch.setenv("PROMPTPROF_ALERTS__RECEIVERS", orjson.dumps(
        [{"name": "a", "url": url, "url_env": "X", "secret": HOOK_KEY}]
    ).decode())
    with pytest.raises(ConfigError) as caught:
        load_settings(cls=ProcessorSettings)
    assert "alerts.receivers" in str(caught.value)
    assert_clean(str(caught.value))


# -- Kafka --------------------------------------------------------------------------------------


def _sasl_profiler(bootstrap: str) -> Profiler:
    settings: Settings = load_settings(
        kafka={"bootstrap_servers": bootstrap, "request_timeout_ms": 1000,
               "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
               "sasl_username": "svc", "sasl_password": SASL_PASSWORD},
        producer={"metrics_log_interval_s": 0, "linger_ms": 5, "retry_backoff_max_ms": 200,
                  "retry_backoff_initial_ms": 20},
    )
    return Profiler(settings)


def _wait(condition: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.02)


@pytest.mark.parametrize("target", ["absent", "no-sasl-broker"])
def test_kafka_failures_with_sasl_never_show_the_password(
    target: str, request: pytest.FixtureRequest, logs: LogText,
    capfd: pytest.CaptureFixture[str],
) -> None:
    if target == "absent":
        bootstrap = f"127.0.0.1:{free_port()}"
    else:  # a real broker that does not speak SASL: the handshake fails
        broker: TansuBroker = request.getfixturevalue("kafka_broker")
        bootstrap = broker.bootstrap
    prof = _sasl_profiler(bootstrap)
    assert_clean(repr(prof.settings), repr(prof))
    for _ in range(20):
        with prof.track("sasl", "v1") as call:
            call.set_text("a prompt", "an answer")
    _wait(lambda: prof.stats()["connect_failures"] >= 2)
    prof.close(0.5)
    stats = prof.stats()
    assert stats["sent_events"] == 0
    out, err = capfd.readouterr()
    assert "kafka_unreachable" in logs.text  # the failure was logged...
    assert_clean(logs.text, out, err, stats)  # ...without the password


# -- InfluxDB -----------------------------------------------------------------------------------


class _Answer(BaseHTTPRequestHandler):
    status = 401
    body = b'{"code":"unauthorized","message":"authorization failed"}'
    seen_auth: list[str] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        _Answer.seen_auth.append(self.headers.get("Authorization", ""))
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def influx_answering() -> Iterator[ThreadingHTTPServer]:
    """A local HTTP server answering every write with ``server.status`` (401 at first)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    server.status = 401  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _influx(url: str, api: str) -> InfluxSettings:
    return InfluxSettings(
        url=url, api=api, token=INFLUX_TOKEN, username="svc",  # type: ignore[arg-type]
        password=INFLUX_PASSWORD, timeout_s=2.0,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("api", ["v1", "v2"])
@pytest.mark.parametrize("status", [401, 500, None])
async def test_influx_write_failures_never_show_the_token_or_password(
    api: str, status: int | None, influx_answering: ThreadingHTTPServer, logs: LogText,
    capfd: pytest.CaptureFixture[str],
) -> None:
    if status is None:
        url = f"http://127.0.0.1:{free_port()}"
    else:
        influx_answering.status = status  # type: ignore[attr-defined]
        url = f"http://127.0.0.1:{influx_answering.server_address[1]}"
    settings = _influx(url, api)
    writer = V2Writer(settings) if api == "v2" else V1Writer(settings)
    retrying = RetryingWriter(writer, initial_s=0.01, maximum_s=0.02)
    try:
        with pytest.raises(InfluxWriteError) as caught:
            await writer.write(["m,t=a v=1 1"])
        if status == 401:  # rejected for good: logged once, returns False
            assert await retrying.write(["m,t=a v=1 1"]) is False
        else:  # retried: logged as behind
            task = asyncio.create_task(retrying.write(["m,t=a v=1 1"]))
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    finally:
        await retrying.close()
    if status is not None:
        assert _Answer.seen_auth, "the server saw no request"
    out, err = capfd.readouterr()
    assert "promptprof.sink_" in logs.text
    assert_clean(str(caught.value), repr(caught.value), repr(caught.value.__cause__),
                 logs.text, out, err, repr(settings))


# -- webhooks -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def some_alerts() -> list[Alert]:
    windows = synthetic_windows(90, seed=21, changes=[Change(60, 70, latency_factor=2.0)])
    alerts = AlertEngine(parse_rules({})).observe(windows)
    assert alerts
    return alerts


@pytest.mark.parametrize("failure", ["absent", "status", "slow", "redirect"])
async def test_webhook_failures_never_show_the_url_token_or_key(
    failure: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, some_alerts: list[Alert],
    logs: LogText, capfd: pytest.CaptureFixture[str],
) -> None:
    server = WebhookReceiver(HOOK_KEY).start()
    try:
        port = free_port() if failure == "absent" else server.port
        if failure == "status":
            server.status = 503
        elif failure == "slow":
            server.delay_s = 1.0
        elif failure == "redirect":
            server.redirect_to = f"http://127.0.0.1:{free_port()}/elsewhere"
        monkeypatch.setenv("HOOK_URL", f"http://127.0.0.1:{port}/hook/{HOOK_TOKEN}?k={HOOK_TOKEN}")
        key_file = tmp_path / "key"
        key_file.write_text(HOOK_KEY + "\n")
        receiver = Receiver.resolve(
            ReceiverSettings(name="oncall", url_env="HOOK_URL", secret_file=key_file),
            ["127.0.0.1"],
        )
        assert receiver.secret == HOOK_KEY.encode()
        sender = WebhookSender(
            RetryPolicy(attempts=2, initial_backoff_s=0.01, max_backoff_s=0.01, timeout_s=0.3)
        )
        try:
            result = await sender.deliver(receiver, some_alerts[0])
        finally:
            await sender.close()
    finally:
        server.stop()
    assert not result.ok
    out, err = capfd.readouterr()
    assert "webhook_attempt_failed" in logs.text
    assert_clean(repr(receiver), str(receiver), result, result.reason, logs.text, out, err)
