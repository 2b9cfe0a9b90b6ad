"""A server process of the local stack: start, health wait, graceful stop, kill, restart.

A handle either owns a child it started (tests) or adopts a process by its pid (the CLI, which
starts detached processes and finds them again through pid files in a later invocation).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import structlog

from promptprof_tools.stack.ports import LOOPBACK, port_in_use

log = structlog.get_logger(__name__)

T = TypeVar("T")

_POLL_S = 0.05
_LOG_TAIL_LINES = 25


class StackError(RuntimeError):
    """A local stack service could not be started, reached or stopped."""


class ServiceProcess(ABC):
    """Handle on one server process whose output goes to ``<log_dir>/<name>.log``."""

    #: Short service name, used for the log file name and in messages.
    name: str = "service"
    #: A string that the process's command line contains, to recognise it by pid.
    process_marker: str = ""

    def __init__(self, *, log_dir: Path, host: str = LOOPBACK, detach: bool = False) -> None:
        """Prepare a handle; nothing starts until :meth:`start`.

        ``detach`` starts the process in a session of its own so that it outlives its parent.
        """
        self.log_dir = Path(log_dir)
        self.host = host
        self.detach = detach
        self._popen: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None

    @property
    def log_path(self) -> Path:
        """The file that receives the process's stdout and stderr."""
        return self.log_dir / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        """The pid of the process started or adopted last, or None."""
        return self._pid

    @abstractmethod
    def command(self) -> list[str]:
        """The argv that starts the server."""

    @abstractmethod
    def ports(self) -> list[int]:
        """The TCP ports that the server binds; they must be free before it starts."""

    @abstractmethod
    def is_healthy(self) -> bool:
        """Tell whether the server answers a real request right now."""

    def environment(self) -> dict[str, str]:
        """The environment for the child: ours, less variables that would reconfigure it."""
        return dict(os.environ)

    def prepare(self) -> None:  # noqa: B027 - an optional hook
        """Write config files or folders before the process starts (a hook)."""

    def after_healthy(self, deadline: float) -> None:  # noqa: B027 - an optional hook
        """Finish setting up once the server answers (a hook), before ``deadline``."""

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the server and wait until it is healthy, or raise :class:`StackError`."""
        if self.is_running():
            raise StackError(f"{self.name} is already running (pid {self._pid})")
        self._check_ports_free()
        self.prepare()
        self._spawn()
        deadline = time.monotonic() + timeout_s
        try:
            self._wait_healthy_until(deadline)
            self.after_healthy(deadline)
        except BaseException:
            self.kill()
            raise
        log.info("stack.started", service=self.name, pid=self._pid, ports=self.ports())

    def adopt(self, pid: int) -> bool:
        """Manage an already running process by pid; False if no such process of ours runs."""
        if not pid_alive(pid) or not process_matches(pid, self.process_marker):
            return False
        self._popen = None
        self._pid = pid
        return True

    def is_running(self) -> bool:
        """Tell whether the process started or adopted last is still alive."""
        if self._popen is not None:
            return self._popen.poll() is None
        return self._pid is not None and pid_alive(self._pid)

    def wait_healthy(self, timeout_s: float = 30.0) -> None:
        """Wait until the server answers, or raise :class:`StackError` with the log's tail."""
        self._wait_healthy_until(time.monotonic() + timeout_s)

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop gracefully (SIGTERM), escalating to SIGKILL after ``timeout_s``."""
        if not self.is_running():
            return
        self._signal(signal.SIGTERM)
        if not self._wait_exit(timeout_s):
            log.warning("stack.stop_timeout", service=self.name, pid=self._pid)
            self.kill()
            return
        log.info("stack.stopped", service=self.name, pid=self._pid)

    def kill(self) -> None:
        """Kill at once (SIGKILL), as a crash would, and wait until the process is gone."""
        if not self.is_running():
            return
        self._signal(signal.SIGKILL)
        if not self._wait_exit(10.0):
            raise StackError(f"{self.name} (pid {self._pid}) survived SIGKILL")
        log.info("stack.killed", service=self.name, pid=self._pid)

    def restart(self, timeout_s: float = 30.0) -> None:
        """Stop (if running) and start again with the same ports and folders."""
        self.stop()
        self._wait_ports_released(timeout_s)
        self.start(timeout_s)

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the log file ('' if there is none)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _check_ports_free(self) -> None:
        busy = [port for port in self.ports() if port_in_use(port, self.host)]
        if busy:
            raise StackError(f"cannot start {self.name}: port(s) {busy} on {self.host} in use")

    def _wait_ports_released(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while any(port_in_use(port, self.host) for port in self.ports()):
            if time.monotonic() > deadline:
                raise StackError(f"{self.name}: ports {self.ports()} still in use after stop")
            time.sleep(_POLL_S)

    def _spawn(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            out.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting\n".encode())
            out.flush()
            self._popen = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                start_new_session=self.detach,
            )
        self._pid = self._popen.pid
        log.debug("stack.spawned", service=self.name, pid=self._pid, argv=self.command())

    def release(self) -> None:
        """Forget the child object and keep only its pid (for processes meant to outlive us)."""
        if self._popen is not None and self._popen.poll() is None:
            # Popen would warn "still running" when collected; from here on we manage by pid.
            self._popen.returncode = 0
        self._popen = None

    def _wait_healthy_until(self, deadline: float) -> None:
        while True:
            if not self.is_running():
                raise StackError(
                    f"{self.name} exited before it became healthy; {self.log_path}:\n"
                    + self.log_tail()
                )
            if self.is_healthy():
                return
            if time.monotonic() > deadline:
                raise StackError(
                    f"{self.name} not healthy in time; {self.log_path}:\n" + self.log_tail()
                )
            time.sleep(_POLL_S)

    def _signal(self, sig: signal.Signals) -> None:
        if self._pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._pid, sig)

    def _wait_exit(self, timeout_s: float) -> bool:
        if self._popen is not None:
            try:
                self._popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout_s
        while self._pid is not None and pid_alive(self._pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(_POLL_S)
        return True


def strip_env(prefixes: tuple[str, ...], names: tuple[str, ...] = ()) -> dict[str, str]:
    """Our environment without variables that start with ``prefixes`` or are in ``names``."""
    env: Mapping[str, str] = os.environ
    return {k: v for k, v in env.items() if not k.startswith(prefixes) and k not in names}


def pid_alive(pid: int) -> bool:
    """Tell whether ``pid`` names a live (not zombie) process; reaps it if it is our child."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def process_matches(pid: int, marker: str) -> bool:
    """Tell whether the command line of ``pid`` contains ``marker`` (True where /proc is absent)."""
    if not Path("/proc/self/cmdline").exists():
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return marker.encode() in cmdline


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from sync code, even where this thread runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="promptprof-stack") as pool:
        return pool.submit(asyncio.run, coro).result()
