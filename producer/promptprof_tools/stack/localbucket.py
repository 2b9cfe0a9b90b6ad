"""localbucket (PyPI), a small S3-compatible server keeping buckets as folders, as Tansu's disk.

Tansu's S3 storage engine keeps records, offsets and committed group offsets there, so they
survive restarts of Tansu and of this server (DESIGN.md, "The local broker").

localbucket 1.2.1 honours ``If-None-Match: *`` on PUT but ignores ``If-Match``, which Tansu sends
to update a partition's watermark and a group's state: two updates racing then both land, the
older last, and after a restart Tansu reads a watermark behind its newest batch (every produce
to that partition then fails with "already exists"). :func:`serve` runs localbucket with
``If-Match`` honoured: conditional PUTs are compared and written under one lock.
"""

from __future__ import annotations

import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from promptprof_tools.stack.ports import LOOPBACK
from promptprof_tools.stack.process import ServiceProcess, StackError

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
        """``python -m promptprof_tools.stack.localbucket --host H --port P DATA_DIR``
        (:func:`serve`)."""
        return [sys.executable, "-m", __name__, "--host", self.host, "--port",
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


def serve() -> None:
    """localbucket's ``main()`` (its command line) with ``If-Match`` honoured on PUT."""
    import localbucket  # a server-side dependency: imported where the server runs

    conditional = threading.Lock()

    class Handler(localbucket.S3Handler):  # type: ignore[misc]
        def _write_object(self, bucket: str, key: str, write: Any) -> Any:
            if_match = self.headers.get("If-Match")
            if if_match is None and "If-None-Match" not in self.headers:
                return super()._write_object(bucket, key, write)
            with conditional:  # compare and write as one step
                if if_match is not None:
                    target = self._object_path(bucket, key)
                    etag = localbucket.object_etag(target) if target.exists() else None
                    if etag is None or not localbucket.etag_matches(if_match, etag):
                        raise self._precondition_failed_error()
                return super()._write_object(bucket, key, write)

    localbucket.S3Handler = Handler  # main() serves with the module's S3Handler
    localbucket.main()


if __name__ == "__main__":
    serve()
