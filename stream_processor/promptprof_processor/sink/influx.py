"""InfluxDB writers: the v1 ``/write`` API and the v2 API through influxdb-client's async client.

Both take line protocol, so the same points reach InfluxDB 1.x (the local default), 1.8+, 2.x
and 3.x. :class:`RetryingWriter` wraps either with exponential backoff and reports when the
sink is behind; it returns only after the write succeeded, which is what lets the caller commit.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

import httpx
import structlog

from promptprof.config import InfluxSettings

log = structlog.get_logger("promptprof.sink")


class InfluxWriteError(RuntimeError):
    """A write that InfluxDB refused or that did not reach it."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class LineWriter(Protocol):
    """Writes line-protocol lines with nanosecond timestamps."""

    async def write(self, lines: list[str]) -> None:
        """Write all lines or raise :class:`InfluxWriteError`."""

    async def close(self) -> None:
        """Release connections."""


class V1Writer:
    """``POST /write?db=...&precision=ns`` (InfluxDB 1.x, and 2.x/3.x compatibility APIs)."""

    def __init__(self, settings: InfluxSettings) -> None:
        auth = None
        if settings.username and settings.password:
            auth = (settings.username, settings.password.get_secret_value())
        self._client = httpx.AsyncClient(
            base_url=settings.url, timeout=settings.timeout_s, verify=settings.verify_ssl,
            auth=auth,
        )
        self._params = {"db": settings.database, "precision": "ns"}

    async def write(self, lines: list[str]) -> None:
        """Write all lines in one request."""
        try:
            response = await self._client.post(
                "/write", params=self._params, content="\n".join(lines).encode()
            )
        except httpx.HTTPError as exc:
            raise InfluxWriteError(f"influxdb unreachable: {exc!r}", retryable=True) from exc
        if response.status_code >= 300:
            retryable = response.status_code >= 500 or response.status_code == 429
            raise InfluxWriteError(
                f"influxdb answered {response.status_code}: {response.text[:300]}",
                retryable=retryable,
            )

    async def close(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()


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
            retryable = status >= 500 or status == 429 or status == 0
            raise InfluxWriteError(f"influxdb v2 write failed: {exc}", retryable=retryable) from exc
        except (TimeoutError, OSError) as exc:
            raise InfluxWriteError(f"influxdb unreachable: {exc!r}", retryable=True) from exc

    async def close(self) -> None:
        """Close the client."""
        await self._client.close()


def make_writer(settings: InfluxSettings) -> LineWriter:
    """The writer for the configured API."""
    return V2Writer(settings) if settings.api == "v2" else V1Writer(settings)


class RetryingWriter:
    """Retries retryable failures with backoff until they succeed; counts and reports."""

    def __init__(
        self, writer: LineWriter, *, initial_s: float = 0.2, maximum_s: float = 10.0
    ) -> None:
        self.writer = writer
        self.initial_s, self.maximum_s = initial_s, maximum_s
        self.points_written = 0
        self.failures = 0
        self.rejected = 0
        self.behind_since: float | None = None

    async def write(self, lines: list[str]) -> bool:
        """Write ``lines``; True once written, False when InfluxDB rejected them for good."""
        delay = self.initial_s
        while True:
            try:
                await self.writer.write(lines)
            except InfluxWriteError as exc:
                if not exc.retryable:
                    self.rejected += len(lines)
                    log.error("promptprof.sink_rejected", points=len(lines), error=str(exc))
                    return False
                self._note_failure(exc, len(lines), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.maximum_s)
                continue
            self._note_success(len(lines))
            return True

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
