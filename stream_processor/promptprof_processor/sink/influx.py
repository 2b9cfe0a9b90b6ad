"""InfluxDB writers: the v1 ``/write`` API and the v2 API through influxdb-client's async client.

Both take line protocol, so the same points reach InfluxDB 1.x (the local default), 1.8+, 2.x
and 3.x. :class:`RetryingWriter` wraps either with exponential backoff and reports when the
sink is behind; it returns only after the write succeeded, which is what lets the caller commit.

InfluxDB answers a request holding a point it refuses (unparsable, a field type conflict, older
than the retention policy, too large) with a 400 (413, 422) and stores the other points of the
request (a partial write). :meth:`RetryingWriter.write_finding_refused` finds the refused
points by bisection: it writes halves of the refused request until each refused point stands
alone, and returns those with InfluxDB's reason. Writing a point twice is harmless (same
timestamp and tags: it overwrites itself). Any other 4xx but 429 (bad credentials, no such
database) refuses every request, whatever it holds: it is raised, not bisected.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Protocol

import httpx
import structlog

from promptprof._backoff import Backoff
from promptprof_processor.settings import InfluxSettings, RetentionSettings
from promptprof_processor.sink.retention import by_policy, policy_statements, quote_ident

log = structlog.get_logger("promptprof.sink")

# Answers to a request whose content InfluxDB refuses (bad line, type conflict, retention, size).
CONTENT_REFUSED = frozenset({400, 413, 422})


class InfluxWriteError(RuntimeError):
    """A write that InfluxDB refused or that did not reach it.

    ``status`` is the HTTP status (None when InfluxDB was not reached); ``reason`` InfluxDB's own
    explanation (its ``error`` or ``message``), or the message when there is none.
    """

    def __init__(
        self, message: str, *, retryable: bool, status: int | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.reason = reason or message

    @property
    def content_refused(self) -> bool:
        """InfluxDB refused points of the request for their content, not the request."""
        return self.status in CONTENT_REFUSED


def _retryable(status: int) -> bool:
    return status >= 500 or status == 429


class LineWriter(Protocol):
    """Writes line-protocol lines with nanosecond timestamps."""

    async def write(self, lines: list[str]) -> None:
        """Write all lines or raise :class:`InfluxWriteError`."""

    async def close(self) -> None:
        """Release connections."""


class V1Writer:
    """``POST /write?db=...&precision=ns`` (InfluxDB 1.x, and 2.x/3.x compatibility APIs).

    With ``retention`` on, each width's windows go to its retention policy (``&rp=``), which
    the writer creates or alters to the configured duration before its first write
    (:mod:`~promptprof_processor.sink.retention`).
    """

    def __init__(self, settings: InfluxSettings, retention: RetentionSettings | None = None,
                 widths_s: Sequence[int] = ()) -> None:
        auth = None
        if settings.username and settings.password:
            auth = (settings.username, settings.password.get_secret_value())
        self._client = httpx.AsyncClient(
            base_url=settings.url, timeout=settings.timeout_s, verify=settings.verify_ssl,
            auth=auth,
        )
        self._params = {"db": settings.database, "precision": "ns"}
        self._retention = retention or RetentionSettings()
        self._policies = self._retention.policies(widths_s)
        self._policies_ready = not self._policies

    async def write(self, lines: list[str]) -> None:
        """Write all lines, one request per retention policy."""
        if not self._policies_ready:
            await self._ensure_policies()
        for policy, group in by_policy(lines, self._policies).items():
            params = self._params if policy is None else {**self._params, "rp": policy}
            await self._request("/write", params, "\n".join(group).encode())

    async def _ensure_policies(self) -> None:
        database = self._params["db"]
        shown = await self._request("/query", {"q": f"SHOW RETENTION POLICIES ON "
                                               f"{quote_ident(database)}"})
        existing = {row[0] for result in shown.json().get("results", [])
                    for series in result.get("series", []) for row in series["values"]}
        for statement in policy_statements(database, self._retention, self._policies, existing):
            await self._request("/query", {"q": statement})
        self._policies_ready = True

    async def _request(self, path: str, params: dict[str, str], body: bytes = b"",
                       ) -> httpx.Response:
        try:
            response = await self._client.post(path, params=params, content=body)
        except httpx.HTTPError as exc:
            raise InfluxWriteError(f"influxdb unreachable: {exc!r}", retryable=True) from exc
        status = response.status_code
        reason = _v1_reason(response) if status >= 300 else _query_error(response)
        if reason is not None:
            raise InfluxWriteError(
                f"influxdb answered {status}: {reason[:300]}", retryable=_retryable(status),
                status=status, reason=reason,
            )
        return response

    async def close(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()


def _query_error(response: httpx.Response) -> str | None:
    """The error of a ``/query`` answer that succeeded as HTTP (None for writes and success)."""
    if not response.content or not response.url.path.endswith("/query"):
        return None
    errors = [r["error"] for r in response.json().get("results", []) if "error" in r]
    return "; ".join(errors) if errors else None


def _v1_reason(response: httpx.Response) -> str:
    """The ``error`` of a v1 answer's JSON body, else the body."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    return error if isinstance(error, str) else response.text


class V2Writer:
    """The v2 write API (InfluxDB 2.x, 3.x, 1.8+) through influxdb-client's async client."""

    def __init__(self, settings: InfluxSettings) -> None:
        from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

        token = settings.token.get_secret_value() if settings.token else ""
        self._client = InfluxDBClientAsync(
            url=settings.url, token=token, org=settings.org,
            timeout=int(settings.timeout_s * 1000), verify_ssl=settings.verify_ssl,
        )
        self._api = self._client.write_api()
        self._bucket = settings.bucket

    async def write(self, lines: list[str]) -> None:
        """Write all lines in one request."""
        from influxdb_client.client.exceptions import InfluxDBError

        try:
            await self._api.write(bucket=self._bucket, record=lines, write_precision="ns")
        except InfluxDBError as exc:
            status = getattr(exc.response, "status", None) or 0
            raise InfluxWriteError(
                f"influxdb v2 write failed: {exc}", retryable=status == 0 or _retryable(status),
                status=status or None, reason=str(exc),
            ) from exc
        except (TimeoutError, OSError) as exc:
            raise InfluxWriteError(f"influxdb unreachable: {exc!r}", retryable=True) from exc

    async def close(self) -> None:
        """Close the client."""
        await self._client.close()


def make_writer(settings: InfluxSettings, retention: RetentionSettings | None = None,
                widths_s: Sequence[int] = ()) -> LineWriter:
    """The writer for the configured API (retention per width: the v1 API only)."""
    if settings.api == "v2":
        return V2Writer(settings)
    return V1Writer(settings, retention, widths_s)


class RetryingWriter:
    """Retries retryable failures with backoff until they succeed; counts and reports."""

    def __init__(
        self, writer: LineWriter, *, initial_s: float = 0.2, maximum_s: float = 10.0
    ) -> None:
        self.writer = writer
        self._backoff = Backoff(initial_s, maximum_s)
        self.points_written = 0
        self.failures = 0
        self.rejected = 0
        self.behind_since: float | None = None

    async def write(self, lines: list[str]) -> bool:
        """Write ``lines``; True once written, False when InfluxDB rejected them for good."""
        refused = await self._write_until_answered(lines)
        if refused is not None:
            self._note_rejected(refused, len(lines))
        return refused is None

    async def write_finding_refused(self, lines: list[str]) -> dict[int, str]:
        """Write ``lines``; return the index and InfluxDB's reason of each line it refused for
        its content (found by bisection; every other line is written).

        Raises :class:`InfluxWriteError` when InfluxDB refuses the request itself (a 4xx
        other than 400, 413, 422 and 429: credentials, permissions, an unknown database).
        """
        refused: dict[int, str] = {}
        await self._bisect(lines, 0, refused)
        return refused

    async def _bisect(self, lines: list[str], offset: int, refused: dict[int, str]) -> None:
        error = await self._write_until_answered(lines)
        if error is None:
            return
        if not error.content_refused:
            self._note_rejected(error, len(lines))
            raise error
        if len(lines) == 1:
            self._note_rejected(error, 1)
            refused[offset] = error.reason
            return
        half = len(lines) // 2
        await self._bisect(lines[:half], offset, refused)
        await self._bisect(lines[half:], offset + half, refused)

    async def _write_until_answered(self, lines: list[str]) -> InfluxWriteError | None:
        """Write, retrying what may succeed later; None once written, else the refusal."""
        while True:
            try:
                await self.writer.write(lines)
            except InfluxWriteError as exc:
                if not exc.retryable:
                    self._backoff.reset()
                    return exc
                delay = self._backoff.next()
                self._note_failure(exc, len(lines), delay)
                await asyncio.sleep(delay)
                continue
            self._backoff.reset()
            self._note_success(len(lines))
            return None

    def _note_rejected(self, error: InfluxWriteError, points: int) -> None:
        self.rejected += points
        log.error("promptprof.sink_rejected", points=points, status=error.status,
                  error=str(error))

    def _note_failure(self, exc: InfluxWriteError, points: int, delay: float) -> None:
        self.failures += 1
        if self.behind_since is None:
            self.behind_since = time.monotonic()
        behind = time.monotonic() - self.behind_since
        log.warning(
            "promptprof.sink_behind", error=str(exc), points_waiting=points,
            behind_s=round(behind, 1), retry_in_s=delay, failures=self.failures,
        )

    def _note_success(self, points: int) -> None:
        if self.behind_since is not None:
            log.info(
                "promptprof.sink_caught_up", behind_s=round(time.monotonic() - self.behind_since, 1)
            )
            self.behind_since = None
        self.points_written += points

    async def close(self) -> None:
        """Close the underlying writer."""
        await self.writer.close()
