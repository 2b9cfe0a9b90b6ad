"""localbucket (PyPI), a small S3-compatible server keeping buckets as folders, as Tansu's disk.

Tansu's S3 storage engine keeps records, offsets and committed group offsets there, so they
survive restarts of Tansu and of this server (DESIGN.md, "The local broker").
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from pathlib import Path

from promptprof.stack.ports import LOOPBACK
from promptprof.stack.process import ServiceProcess, StackError

BUCKET = "tansu"
_HTTP_TIMEOUT_S = 5.0


class LocalBucket(ServiceProcess):
    """A ``localbucket`` on ``host:port`` serving the folders under ``data_dir``.

    Once healthy it holds the bucket ``bucket``; :meth:`tansu_environment` points Tansu at it.
    """

    name = "localbucket"
    process_marker = "localbucket"

    def __init__(
        self,
        port: int,
        data_dir: Path,
        *,
        log_dir: Path | None = None,
        bucket: str = BUCKET,
        host: str = LOOPBACK,
        detach: bool = False,
    ) -> None:
        """Prepare a handle; :meth:`start` runs the server and creates the bucket."""
        data_dir = Path(data_dir)
        super().__init__(log_dir=log_dir or data_dir, host=host, detach=detach)
        self.port = port
        self.data_dir = data_dir
        self.bucket = bucket

    @property
    def url(self) -> str:
        """The server's HTTP base URL."""
        return f"http://{self.host}:{self.port}"

    @property
    def storage_engine(self) -> str:
        """Tansu's ``--storage-engine`` URL for the bucket."""
        return f"s3://{self.bucket}/"

    def tansu_environment(self) -> dict[str, str]:
        """The variables Tansu's S3 engine reads (a local server checks no credentials)."""
        return {
            "AWS_ENDPOINT": self.url,
            "AWS_ACCESS_KEY_ID": "promptprof",
            "AWS_SECRET_ACCESS_KEY": "promptprof",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }

    def command(self) -> list[str]:
        """``python -m localbucket --host H --port P DATA_DIR`` with our interpreter."""
        return [sys.executable, "-m", "localbucket", "--host", self.host, "--port",
                str(self.port), str(self.data_dir)]

    def ports(self) -> list[int]:
        """The HTTP port."""
        return [self.port]

    def prepare(self) -> None:
        """Create the data folder."""
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def is_healthy(self) -> bool:
        """Tell whether ListBuckets answers."""
        return self._request("GET", "/") == 200

    def after_healthy(self, deadline: float) -> None:
        """Create the bucket (an existing one is kept with its objects)."""
        status = self._request("PUT", f"/{self.bucket}")
        if status not in (200, 409):
            raise StackError(f"localbucket: creating bucket {self.bucket} answered {status}")

    def _request(self, method: str, path: str) -> int:
        request = urllib.request.Request(self.url + path, method=method)
        try:
            with urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT_S) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0

    def __repr__(self) -> str:
        return f"LocalBucket(url={self.url!r}, data_dir={str(self.data_dir)!r}, pid={self.pid})"
