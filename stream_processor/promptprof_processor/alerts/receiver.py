"""A small local webhook receiver for demos and tests: records alerts, checks signatures.

:class:`WebhookReceiver` is an HTTP server on loopback (a thread; usable from sync and async
code). Each ``POST`` is recorded with its headers and body; with a secret, the signature is
verified (see :mod:`promptprof_processor.alerts.webhooks`) and a bad one is answered 401.
Its behaviour can be changed while it runs, to play a broken receiver: ``status`` (e.g. 500),
``delay_s`` (a slow one), ``fail_first`` (fail that many requests first), ``redirect_to``, and
``response_bytes`` (an oversized answer).

From a shell (prints one line per alert; the secret is read from an environment variable)::

    PROMPTPROF_WEBHOOK_SECRET=... python -m promptprof_processor.alerts.receiver \\
        --port 18099 --secret-env PROMPTPROF_WEBHOOK_SECRET
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from promptprof_processor.alerts.webhooks import verify_signature

MAX_BODY = 4 * 1_048_576


@dataclass(frozen=True)
class Received:
    """One request the receiver took."""

    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool | None  # None: no secret to check against
    at: float

    def json(self) -> Any:
        """The body parsed as JSON."""
        return orjson.loads(self.body)


class WebhookReceiver:
    """A threaded HTTP server on loopback that records what is posted to it."""

    def __init__(
        self, secret: bytes | str | None = None, *, host: str = "127.0.0.1", port: int = 0,
        on_alert: Callable[[Received], None] | None = None,
    ) -> None:
        """A receiver (not started); ``port`` 0 picks a free port."""
        self.secret = secret.encode() if isinstance(secret, str) else secret
        self.on_alert = on_alert
        self.status = 200
        self.delay_s = 0.0
        self.fail_first = 0
        self.redirect_to: str | None = None
        self.response_bytes = 0
        self.requests = 0
        self.received: list[Received] = []
        self.rejected: list[Received] = []
        self._lock = threading.Condition()
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The URL to post alerts to."""
        host = str(self._server.server_address[0])
        return f"http://{host}:{self.port}/alerts"

    def start(self) -> WebhookReceiver:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="webhook-receiver", daemon=True
        )
        self._thread.start()
        return self

    def serve(self) -> None:
        """Serve in the calling thread until interrupted (Ctrl-C), then close."""
        try:
            self._server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self._server.server_close()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[Received]:
        """Block the thread until ``count`` alerts were received (or the time-out); return all."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._lock.wait(left)
            return list(self.received)

    async def wait(self, count: int, timeout_s: float = 10.0) -> list[Received]:
        """:meth:`wait_for` for asyncio code: polls without blocking the event loop."""
        deadline = time.monotonic() + timeout_s
        while len(self.received) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        with self._lock:
            return list(self.received)

    def alerts(self) -> list[Any]:
        """The alerts received so far, in order (those of a grouped notification one by one;
        the generic format's bodies)."""
        with self._lock:
            bodies = [r.json() for r in self.received]
        return [
            alert for body in bodies
            for alert in (body["alerts"] if "group_key" in body else [body])
        ]

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes, str]:
        """Decide the answer to one request: (status, body, Location or '')."""
        with self._lock:
            self.requests += 1
            failing = self.requests <= self.fail_first
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.redirect_to:
            return 307, b"", self.redirect_to
        verified = None if self.secret is None else verify_signature(self.secret, headers, body)
        record = Received(path, headers, body, verified, time.time())
        if verified is False:
            with self._lock:
                self.rejected.append(record)
            return 401, b'{"error": "bad signature"}', ""
        if failing or self.status >= 300:
            return (500 if failing else self.status), b'{"error": "failing on purpose"}', ""
        with self._lock:
            self.received.append(record)
            self._lock.notify_all()
        if self.on_alert is not None:
            self.on_alert(record)
        return self.status, b"x" * self.response_bytes or b'{"ok": true}', ""


def _handler_for(receiver: WebhookReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY)
            body = self.rfile.read(length)
            headers = {k: v for k, v in self.headers.items()}
            status, answer, location = receiver.handle(self.path, headers, body)
            self.send_response(status)
            if location:
                self.send_header("Location", location)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            with contextlib.suppress(OSError):  # the client stopped reading (a size limit)
                self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the receiver records requests itself."""

    return Handler


def _print_alert(record: Received) -> None:
    try:
        alert = record.json()
    except orjson.JSONDecodeError:
        print(f"non-JSON body of {len(record.body)} bytes", flush=True)
        return
    if isinstance(alert, dict) and "message" in alert:
        check = {True: "signed", False: "BAD SIGNATURE", None: "unsigned"}[record.verified]
        print(f"[{alert['state']}] {alert['severity']} {alert['message']} ({check})", flush=True)
    else:
        print(orjson.dumps(alert).decode(), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a receiver in the foreground until interrupted."""
    parser = argparse.ArgumentParser(description="print the alerts posted to this receiver")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18099)
    parser.add_argument("--secret-env", help="environment variable holding the HMAC key")
    args = parser.parse_args(argv)
    secret = os.environ.get(args.secret_env) if args.secret_env else None
    if args.secret_env and not secret:
        print(f"environment variable {args.secret_env} is not set", file=sys.stderr)
        return 2
    receiver = WebhookReceiver(secret, host=args.host, port=args.port, on_alert=_print_alert)
    print(f"receiving alerts on {receiver.url}", file=sys.stderr, flush=True)
    receiver.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
