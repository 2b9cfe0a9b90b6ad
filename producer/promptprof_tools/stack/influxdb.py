"""InfluxDB 1.x (Debian's ``influxdb`` package, 1.6.7) as an ordinary local process.

Only the standard library speaks HTTP here, so the base install needs no InfluxDB client.
Data, WAL and meta folders live under ``data_dir`` and survive :meth:`InfluxDB.restart`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import structlog

from promptprof_tools.stack.ports import LOOPBACK
from promptprof_tools.stack.process import ServiceProcess, StackError, strip_env

log = structlog.get_logger(__name__)

INFLUXD_INSTALL_HINT = (
    "influxd not found: install InfluxDB 1.x, e.g. `apt-get install -y influxdb` "
    "(Debian; `make deps` does it), or put influxd on PATH"
)
_HTTP_TIMEOUT_S = 10.0


def influxd_binary() -> Path:
    """Locate ``influxd`` on PATH, or raise :class:`StackError` with the install hint."""
    found = shutil.which("influxd")
    if found is None:
        raise StackError(INFLUXD_INSTALL_HINT)
    return Path(found)


def quote_ident(name: str) -> str:
    """Quote an InfluxQL identifier (database, measurement) with double quotes."""
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


class InfluxDB(ServiceProcess):
    """An ``influxd`` on ``host:port`` (HTTP) and ``host:rpc_port`` (RPC), data in ``data_dir``.

    Once healthy it holds the database ``database``. :meth:`write`, :meth:`query` and
    :meth:`rows` speak the v1 HTTP API with the standard library.
    """

    name = "influxd"
    process_marker = "influxd"

    def __init__(
        self,
        port: int,
        rpc_port: int,
        data_dir: Path,
        *,
        log_dir: Path | None = None,
        database: str = "promptprof",
        host: str = LOOPBACK,
        binary: Path | None = None,
        detach: bool = False,
    ) -> None:
        """Prepare a handle; :meth:`start` writes the config and runs influxd."""
        data_dir = Path(data_dir)
        super().__init__(log_dir=log_dir or data_dir, host=host, detach=detach)
        self.port = port
        self.rpc_port = rpc_port
        self.data_dir = data_dir
        self.database = database
        self._binary = binary

    @property
    def url(self) -> str:
        """The HTTP base URL, e.g. ``http://127.0.0.1:18086``."""
        return f"http://{self.host}:{self.port}"

    @property
    def config_path(self) -> Path:
        """The generated ``influxdb.conf``."""
        return self.data_dir / "influxdb.conf"

    def command(self) -> list[str]:
        """``influxd run -config <our config>``."""
        binary = self._binary or influxd_binary()
        return [str(binary), "run", "-config", str(self.config_path)]

    def ports(self) -> list[int]:
        """The HTTP and RPC ports."""
        return [self.port, self.rpc_port]

    def environment(self) -> dict[str, str]:
        """Our environment less ``INFLUXDB_*``, which would override the config file."""
        return strip_env(("INFLUXDB_",))

    def prepare(self) -> None:
        """Write ``influxdb.conf`` from ``influxd config`` with our folders and ports."""
        binary = self._binary or influxd_binary()
        for sub in ("meta", "data", "wal"):
            (self.data_dir / sub).mkdir(parents=True, exist_ok=True)
        defaults = subprocess.run(
            [str(binary), "config", "-config", "/dev/null"],
            check=True,
            capture_output=True,
            text=True,
            env=self.environment(),
        ).stdout
        self.config_path.write_text(self._configure(defaults))

    def _configure(self, text: str) -> str:
        root = self.data_dir.resolve()
        edits: list[tuple[str, str, str]] = [
            ("", "bind-address", f'"{self.host}:{self.rpc_port}"'),
            ("meta", "dir", f'"{root / "meta"}"'),
            ("data", "dir", f'"{root / "data"}"'),
            ("data", "wal-dir", f'"{root / "wal"}"'),
            ("http", "bind-address", f'"{self.host}:{self.port}"'),
            ("monitor", "store-enabled", "false"),
            ("logging", "suppress-logo", "true"),
        ]
        # Debian's build names the switch reporting-enabled; upstream's reporting-disabled.
        if _has_option(text, "", "reporting-enabled"):
            edits.append(("", "reporting-enabled", "false"))
        else:
            edits.append(("", "reporting-disabled", "true"))
        for section, key, value in edits:
            text = set_toml_option(text, section, key, value)
        return text

    def is_healthy(self) -> bool:
        """Tell whether ``GET /ping`` answers 204."""
        return self.ping()

    def after_healthy(self, deadline: float) -> None:
        """Create :attr:`database` (idempotent)."""
        while True:
            try:
                self.create_database(self.database)
                return
            except StackError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def ping(self, timeout_s: float = 2.0) -> bool:
        """Tell whether ``GET /ping`` answers 204 within ``timeout_s``."""
        try:
            status, _ = self._http("GET", "/ping", timeout_s=timeout_s)
        except (OSError, StackError):
            return False
        return status == 204

    def create_database(self, name: str) -> None:
        """``CREATE DATABASE`` (a no-op when it exists)."""
        self.query(f"CREATE DATABASE {quote_ident(name)}")
        log.debug("influx.database_created", database=name)

    def query(self, q: str, database: str | None = None) -> dict[str, Any]:
        """Run InfluxQL through ``POST /query``; return the JSON, raise on any error in it."""
        params = {"q": q, "db": database or self.database, "epoch": "ns"}
        _, body = self._http("POST", "/query", params=params)
        result: dict[str, Any] = json.loads(body)
        errors = [r["error"] for r in result.get("results", []) if "error" in r]
        if "error" in result or errors:
            raise StackError(f"influx query {q!r} failed: {result.get('error') or errors}")
        return result

    def rows(self, q: str, database: str | None = None) -> list[dict[str, Any]]:
        """Run a query and flatten every series into dicts of column -> value plus its tags."""
        out: list[dict[str, Any]] = []
        for statement in self.query(q, database).get("results", []):
            for series in statement.get("series", []):
                tags = series.get("tags", {})
                for values in series.get("values", []):
                    row = dict(zip(series["columns"], values, strict=True))
                    out.append({"measurement": series.get("name"), **tags, **row})
        return out

    def write(
        self, lines: str | Iterable[str], database: str | None = None, precision: str = "ns"
    ) -> None:
        """Write line protocol through ``POST /write``; raise unless it answers 204."""
        text = lines if isinstance(lines, str) else "\n".join(lines)
        params = {"db": database or self.database, "precision": precision}
        status, body = self._http("POST", "/write", params=params, data=text.encode())
        if status != 204:
            raise StackError(f"influx write answered {status}: {body[:500]!r}")

    def _http(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None = None,
        data: bytes | None = None,
        timeout_s: float = _HTTP_TIMEOUT_S,
    ) -> tuple[int, bytes]:
        url = self.url + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        request = urllib.request.Request(url, data=data, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as exc:
            raise StackError(f"{method} {path} -> {exc.code}: {exc.read()[:500]!r}") from None

    def __repr__(self) -> str:
        return f"InfluxDB(url={self.url!r}, database={self.database!r}, pid={self.pid})"


def set_toml_option(text: str, section: str, key: str, value: str) -> str:
    """Set ``key = value`` in ``[section]`` ('' is the top level) of a flat TOML text."""
    lines = text.splitlines()
    start, end = _section_bounds(lines, section)
    for index in range(start, end):
        if lines[index].strip().split("=", 1)[0].strip() == key:
            indent = lines[index][: len(lines[index]) - len(lines[index].lstrip())]
            lines[index] = f"{indent}{key} = {value}"
            return "\n".join(lines) + "\n"
    lines.insert(start, f"  {key} = {value}" if section else f"{key} = {value}")
    return "\n".join(lines) + "\n"


def _has_option(text: str, section: str, key: str) -> bool:
    lines = text.splitlines()
    start, end = _section_bounds(lines, section)
    return any(line.strip().split("=", 1)[0].strip() == key for line in lines[start:end])


def _section_bounds(lines: list[str], section: str) -> tuple[int, int]:
    """Return [start, end) of the lines of ``section``'s body ('' is before any header)."""
    start = 0
    if section:
        header = f"[{section}]"
        try:
            start = next(i for i, line in enumerate(lines) if line.strip() == header) + 1
        except StopIteration:
            lines.append(header)
            return len(lines), len(lines)
    end = next(
        (i for i in range(start, len(lines)) if lines[i].lstrip().startswith("[")), len(lines)
    )
    return start, end
