"""The demo's stream-processor worker, run as a child process of ``promptprof demo``."""

from __future__ import annotations

import importlib.resources
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

DEMO_LATENESS_S = 5
# Faust's own settings: Tansu holds a consumer-group join for about half the session timeout,
# so the defaults (60 s) would keep the demo's worker from starting for half a minute.
FAUST_ENV = {
    "BROKER_SESSION_TIMEOUT": "6",
    "BROKER_REBALANCE_TIMEOUT": "6",
    "BROKER_HEARTBEAT_INTERVAL": "1",
}


DEMO_WIDTHS_S = "[5, 10]"
# shipped as package data; an installed package is a directory, so the worker can read its path
DEMO_RULES = Path(str(importlib.resources.files("promptprof_tools.demo") / "demo-rules.yaml"))
WEBHOOK_SECRET_ENV = "PROMPTPROF_DEMO_WEBHOOK_SECRET"
# a short group wait, so the demo's alerts show within seconds of the regression
DEMO_GROUPING = json.dumps({"group_wait_s": 2, "group_interval_s": 20})


def start_worker(
    state_dir: Path, config: Path | None, webhook_url: str, secret: str
) -> subprocess.Popen[bytes]:
    """Start ``promptprof worker`` with short windows and lateness, alerts to ``webhook_url``."""
    env = {**FAUST_ENV, **os.environ, WEBHOOK_SECRET_ENV: secret}
    env.setdefault("PROMPTPROF_WINDOWS__ALLOWED_LATENESS_S", str(DEMO_LATENESS_S))
    env.setdefault("PROMPTPROF_WINDOWS__WIDTHS_S", DEMO_WIDTHS_S)
    env.setdefault("PROMPTPROF_ALERTS__RULES_FILE", str(DEMO_RULES))
    receiver = {"name": "demo", "url": webhook_url, "secret_env": WEBHOOK_SECRET_ENV}
    env.setdefault("PROMPTPROF_ALERTS__RECEIVERS", json.dumps([receiver]))
    env.setdefault("PROMPTPROF_ALERTS__ROUTES", json.dumps([{"receivers": ["demo"]}]))
    env.setdefault("PROMPTPROF_ALERTS__GROUPING", DEMO_GROUPING)
    env.setdefault("PROMPTPROF_WORKER__IDLE_TIMEOUT_S", "2")
    env.setdefault("PROMPTPROF_WORKER__DATA_DIR", str(state_dir / "worker"))
    state_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "promptprof_tools.cli"]
    if config is not None:
        argv += ["--config", str(config)]
    log = (state_dir / "demo-worker.log").open("ab")
    return subprocess.Popen([*argv, "worker"], env=env, stdout=log, stderr=log)


def stop_worker(process: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it does not stop in time."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
