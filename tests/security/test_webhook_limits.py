"""Webhook hardening beyond tests/alerts/test_webhooks.py: URL tricks against the host
allow-list, every redirect status (never followed, to another host or the same), and answers
that trickle or never end (bounded by the time limit and the size limit). Real local servers."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promptprof_processor.alerts import (
    Alert,
    AlertEngine,
    ReceiverSettings,
    RetryPolicy,
    parse_rules,
)
from promptprof_processor.alerts.synthetic import Change, synthetic_windows
from promptprof_processor.alerts.webhooks import (
    Receiver,
    WebhookConfigError,
    WebhookSender,
    validate_url,
)

ALLOWED = ["hooks.example.com", "*.alerts.example.net"]
ONE_TRY = RetryPolicy(attempts=1, initial_backoff_s=0.01, max_backoff_s=0.01, timeout_s=1.0)


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com@evil.org/x",  # userinfo: the host is evil.org
        "https://hooks.example.com.evil.org/x",
        "https://evilhooks.example.com/x",
        "https://alerts.example.net/x",  # a wildcard matches subdomains only
        "https://xalerts.example.net/x",
        "https://hooks.example.com./x",  # a trailing dot is another name
        "https://127.0.0.1/x",
        "https://[::1]/x",
        "https://xn--hooks-example.com/x",  # invalid IDNA
        "javascript:alert(1)",
        "data:text/plain,hi",
        "file:///etc/passwd",
        "gopher://hooks.example.com/x",
        "//hooks.example.com/x",
        "hooks.example.com/x",
        "",
    ],
)
def test_url_tricks_are_refused(url: str) -> None:
    with pytest.raises(WebhookConfigError):
        validate_url(url, ALLOWED, receiver="r")


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("HTTPS://HOOKS.EXAMPLE.COM/x?y=1", "hooks.example.com"),
        ("https://hooks.example.com:8443/x", "hooks.example.com"),
        ("http://a.alerts.example.net/x", "a.alerts.example.net"),
        ("https://a.b.alerts.example.net/x", "a.b.alerts.example.net"),
    ],
)
def test_allowed_urls_give_their_host(url: str, host: str) -> None:
    assert validate_url(url, ALLOWED) == host


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.text(max_size=80),
    st.builds(lambda s, h, p: f"{s}://{h}/{p}",
              st.sampled_from(["http", "https", "HTTP", "ftp", ""]),
              st.text(max_size=30), st.text(max_size=20)),
))
def test_validate_url_only_raises_its_own_error(url: str) -> None:
    try:
        host = validate_url(url, ALLOWED)
    except WebhookConfigError as exc:
        assert "receiver" in str(exc)
    else:
        assert host == "hooks.example.com" or host.endswith(".alerts.example.net")


# -- real servers -------------------------------------------------------------------------------


class _Server:
    """A loopback HTTP server whose answer is a function of the handler; counts requests."""

    def __init__(self, answer: Callable[[BaseHTTPRequestHandler], None]) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                owner.requests += 1
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    answer(self)

            do_GET = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.requests = 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers() -> Iterator[Callable[[Callable[[BaseHTTPRequestHandler], None]], _Server]]:
    started: list[_Server] = []

    def make(answer: Callable[[BaseHTTPRequestHandler], None]) -> _Server:
        server = _Server(answer)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def _ok(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", "0")
    handler.end_headers()


@pytest.fixture(scope="module")
def alert() -> Alert:
    windows = synthetic_windows(90, seed=21, changes=[Change(60, 70, latency_factor=2.0)])
    return AlertEngine(parse_rules({})).observe(windows)[0]


async def _deliver(url: str, alert: Alert, **sender: Any) -> Any:
    receiver = Receiver.resolve(ReceiverSettings(name="r", url=url))  # type: ignore[arg-type]
    webhook = WebhookSender(sender.pop("policy", ONE_TRY), **sender)
    try:
        return await webhook.deliver(receiver, alert)
    finally:
        await webhook.close()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("same_host", [False, True])
async def test_no_redirect_is_followed(
    status: int, same_host: bool, alert: Alert, servers: Callable[..., _Server]
) -> None:
    target = servers(_ok)

    def redirect(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        port = target.url.rsplit(":", 1)[1]
        location = "/elsewhere" if same_host else f"http://localhost:{port}/"
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    source = servers(redirect)
    retries = RetryPolicy(attempts=3, initial_backoff_s=0.01, max_backoff_s=0.01, timeout_s=1.0)
    result = await _deliver(source.url + "/hook", alert, policy=retries)
    assert (result.ok, result.status, result.attempts) == (False, status, 1)  # not retried
    assert "redirects are not followed" in result.reason
    assert source.requests == 1 and target.requests == 0


async def test_a_trickling_answer_is_cut_by_the_time_limit(
    alert: Alert, servers: Callable[..., _Server]
) -> None:
    def trickle(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "100000")
        handler.end_headers()
        for _ in range(100):  # one byte every 0.1 s: 10 s in all
            handler.wfile.write(b"x")
            handler.wfile.flush()
            time.sleep(0.1)

    server = servers(trickle)
    started = time.monotonic()
    result = await _deliver(server.url, alert)
    assert not result.ok and "no complete answer within 1.0 s" in result.reason
    assert time.monotonic() - started < 3.0


async def test_an_endless_answer_is_cut_by_the_size_limit(
    alert: Alert, servers: Callable[..., _Server]
) -> None:
    def endless(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)  # no length: the body ends when the connection closes
        handler.send_header("Connection", "close")
        handler.end_headers()
        chunk = b"y" * 65536
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            handler.wfile.write(chunk)

    server = servers(endless)
    started = time.monotonic()
    result = await _deliver(server.url, alert, max_response_bytes=4096)
    assert result.ok and result.status == 200
    assert time.monotonic() - started < 2.0
