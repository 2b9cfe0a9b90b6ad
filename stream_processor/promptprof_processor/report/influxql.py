"""A small InfluxQL client over the v1 ``/query`` API, and the measurements it reads.

The ``/query`` endpoint answers on InfluxDB 1.x, on 2.x (through DBRP mappings, with a token)
and on 3.x, so the report, like the Grafana dashboards, reads every version the sink writes to.
"""

from __future__ import annotations

from typing import Any

import httpx

from promptprof_processor.settings import InfluxSettings
from promptprof_processor.sink.lineprotocol import ERRORS_MEASUREMENT, WINDOW_MEASUREMENT

ALERT_MEASUREMENT = "llm_alert"
"""Alerts of the anomaly detector: tags service, prompt_id, prompt_version, model, rule,
severity, state; fields observed, baseline, threshold, message; timestamp = window end."""

__all__ = ["ALERT_MEASUREMENT", "ERRORS_MEASUREMENT", "WINDOW_MEASUREMENT", "InfluxQLClient",
           "InfluxQLError", "Row"]

Row = dict[str, Any]


class InfluxQLError(RuntimeError):
    """InfluxDB could not be reached or answered a query with an error."""


class InfluxQLClient:
    """Runs InfluxQL on the database of :class:`InfluxSettings` (times in epoch milliseconds).

    Authenticates with the token (``Authorization: Token ...``, InfluxDB 2.x/3.x) when one is
    set, else with username and password (1.x) when those are.
    """

    def __init__(self, settings: InfluxSettings) -> None:
        self.settings = settings
        headers = {"Authorization": f"Token {settings.token.get_secret_value()}"} \
            if settings.token else {}
        self._client = httpx.Client(
            base_url=settings.url, headers=headers, timeout=settings.timeout_s,
            verify=settings.verify_ssl,
        )

    def rows(self, query: str) -> list[Row]:
        """Every row of every series of ``query``: the series' tags plus its columns."""
        out: list[Row] = []
        for series in self._series(query):
            tags = series.get("tags") or {}
            columns = series["columns"]
            out.extend({**tags, **dict(zip(columns, values, strict=True))}
                       for values in series.get("values", []))
        return out

    def _series(self, query: str) -> list[dict[str, Any]]:
        params = {"db": self.settings.database, "q": query, "epoch": "ms"}
        if self.settings.username and self.settings.password:
            params |= {"u": self.settings.username,
                       "p": self.settings.password.get_secret_value()}
        try:
            response = self._client.get("/query", params=params)
        except httpx.HTTPError as exc:
            raise InfluxQLError(f"InfluxDB at {self.settings.url} unreachable: {exc}") from None
        if response.status_code != 200:
            raise InfluxQLError(f"query {query!r}: InfluxDB answered {response.status_code}: "
                                f"{_error_text(response)}")
        body = response.json()
        series: list[dict[str, Any]] = []
        for result in body.get("results", []):
            if "error" in result:
                raise InfluxQLError(f"query {query!r} failed: {result['error']}")
            series.extend(result.get("series", []))
        return series

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def __enter__(self) -> InfluxQLClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        return response.text[:300]
