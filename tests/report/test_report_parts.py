"""The report's parts: durations, scope, the InfluxQL client, the page, and the exit codes."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from promptprof import load_settings
from promptprof_processor.report import report_command
from promptprof_processor.report.charts import render_charts
from promptprof_processor.report.command import EXIT_ERROR, EXIT_NO_DATA
from promptprof_processor.report.html import SUMMARY_COLUMNS, build_html, table
from promptprof_processor.report.influxql import InfluxQLClient, InfluxQLError
from promptprof_processor.report.queries import (
    MAX_WINDOWS_PER_SERIES,
    ReportData,
    choose_scope,
    parse_since,
)
from promptprof_processor.settings import InfluxSettings, ProcessorSettings
from promptprof_tools.stack import InfluxDB, free_port


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("30m", 1800), ("1h", 3600), ("2d", 172_800), ("1w", 604_800),
    ("1h30m", 5400), (" 1H ", 3600),
])
def test_parse_since(text: str, seconds: int) -> None:
    assert parse_since(text) == seconds


@pytest.mark.parametrize("text", ["", "1", "h", "1y", "-1h", "0s", "1h 30m", "1.5h"])
def test_parse_since_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_since(text)


def test_scope_takes_the_finest_width_that_fits_and_buckets_of_whole_windows() -> None:
    hour = choose_scope(["60s", "10s", "3600s"], 3600, 0, 3_600_000)
    assert hour is not None and (hour.width, hour.bucket_s) == ("10s", 30)
    week_ms = 7 * 86_400_000
    week = choose_scope(["10s", "60s", "3600s"], 7 * 86_400, 0, week_ms)
    assert week is not None and week.width == "3600s" and week.bucket_s == 3600 * 2
    assert MAX_WINDOWS_PER_SERIES < 7 * 86_400 / 60
    short = choose_scope(["1s"], 86_400, 0, 12_000)  # a day asked, 12 s of data: fine buckets
    assert short is not None and short.bucket_s == 1
    assert choose_scope([], 3600, 0, 1) is None


class _Recorder(BaseHTTPRequestHandler):
    seen: list[dict[str, Any]] = []

    def do_GET(self) -> None:
        self.seen.append({"path": self.path, "auth": self.headers.get("Authorization")})
        body = json.dumps({"results": [{"statement_id": 0}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Recorder.seen.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_client_sends_the_token_for_influxdb_2_and_3(recorder: str) -> None:
    settings = InfluxSettings(url=recorder, database="db1", token=SecretStr("t0k"))
    with InfluxQLClient(settings) as client:
        assert client.rows("SHOW MEASUREMENTS") == []
    (request,) = _Recorder.seen
    assert request["auth"] == "Token t0k"
    assert request["path"].startswith("/query?") and "db=db1" in request["path"]


def test_client_raises_on_influxql_errors(influxdb: InfluxDB) -> None:
    with InfluxQLClient(InfluxSettings(url=influxdb.url, database=influxdb.database)) as client, \
            pytest.raises(InfluxQLError, match="answered 400: error parsing query"):
        client.rows("SELECT FROM nothing")
    with InfluxQLClient(InfluxSettings(url=influxdb.url, database="nope")) as client, \
            pytest.raises(InfluxQLError, match="failed: database not found"):
        client.rows('SELECT "calls" FROM "llm_window"')


def _settings(url: str, database: str = "promptprof_test") -> ProcessorSettings:
    settings = load_settings(
        cls=ProcessorSettings, influx={"url": url, "api": "v1", "database": database}
    )
    return settings


def test_empty_database_writes_a_page_that_says_so(
    influxdb: InfluxDB, influx_database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "nested" / "report.html"
    code = report_command(_settings(influxdb.url, influx_database), "1h", out, tmp_path / "png")
    assert code == EXIT_NO_DATA
    assert "No windows in InfluxDB for this range." in out.read_text()
    assert list((tmp_path / "png").iterdir()) == []
    assert "no windows" in capsys.readouterr().out


def test_unreachable_influxdb_and_bad_duration_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.html"
    assert report_command(_settings(f"http://127.0.0.1:{free_port()}"), "1h", out, None) == 2
    assert "unreachable" in capsys.readouterr().err
    assert report_command(_settings("http://127.0.0.1:1"), "soon", out, None) == EXIT_ERROR
    assert "not a duration" in capsys.readouterr().err
    assert not out.exists()


def test_page_escapes_what_it_reads() -> None:
    row = {key: None for key, _, _ in SUMMARY_COLUMNS} | {
        "prompt_id": "<script>alert(1)</script>", "service": "a&b", "calls": 3.0,
    }
    page = table([row], SUMMARY_COLUMNS)
    assert "<script>" not in page and "&lt;script&gt;" in page and "a&amp;b" in page


def test_page_without_data_has_no_charts() -> None:
    from datetime import UTC, datetime

    data = ReportData(scope=None, generated_at=datetime(2026, 1, 1, tzinfo=UTC))
    assert render_charts(data) == []
    page = build_html(data, [], "http://influx <db>")
    assert "<img" not in page and "http://influx &lt;db&gt;" in page
    assert "No alerts in this range." in page
