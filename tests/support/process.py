"""Real server processes for tests: geartrain and C gearmand, on free ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GEARMAND = "/usr/sbin/gearmand"


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def geartrain_command() -> list[str]:
    """How to start geartrain: the venv's console script, else ``python -m``."""
    exe = Path(sys.executable).with_name("geartrain")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "geartrain"]


def wait_listening(host: str, port: int, proc: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited during start-up with code {proc.returncode}")
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listening on {host}:{port} after {timeout}s")


#: every server process started by the tests, so none outlives the session
STARTED: list[ServerProcess] = []


def kill_leftovers() -> int:
    """Kill (SIGKILL) every server a test started and did not stop; how many."""
    killed = 0
    for srv in STARTED:
        if srv.proc is not None and srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait(10)
            killed += 1
    STARTED.clear()
    return killed


class ServerProcess:
    """A job server subprocess. ``log`` holds its stderr/stdout after ``stop``."""

    def __init__(self, argv: Sequence[str], host: str, port: int, workdir: Path) -> None:
        self.argv = list(argv)
        self.host = host
        self.port = port
        self.workdir = workdir
        self.log_path = workdir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, wait: bool = True) -> ServerProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.workdir, start_new_session=True,
            )
        STARTED.append(self)
        if wait:
            try:
                wait_listening(self.host, self.port, self.proc)
            except RuntimeError as exc:
                self.stop()
                raise RuntimeError(f"{exc}\n--- server log ---\n{self.log()}") from None
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        return self.proc.returncode


def geartrain(*args: str, host: str = "127.0.0.1", port: int | None = None,
              workdir: Path | None = None) -> ServerProcess:
    """A geartrain server (not started) listening on *host*:*port*."""
    port = port or free_port(host)
    workdir = workdir or Path(tempfile.mkdtemp(prefix="geartrain-test-"))
    argv = [*geartrain_command(), "server", "--port", str(port), "--listen", host,
            "--log-file", "stderr", "--data-dir", str(workdir / "data"), *args]
    return ServerProcess(argv, host, port, workdir)


def gearmand(*args: str, host: str = "127.0.0.1", port: int | None = None,
             workdir: Path | None = None) -> ServerProcess:
    """C gearmand (the reference), single-threaded, not started."""
    if not shutil.which(GEARMAND) and not os.path.exists(GEARMAND):
        raise RuntimeError(f"{GEARMAND} is missing: install Debian's gearman-job-server (make test does)")
    port = port or free_port(host)
    workdir = workdir or Path(tempfile.mkdtemp(prefix="gearmand-test-"))
    argv = [GEARMAND, "-p", str(port), "-L", host, "-t", "0", "-l", "stderr",
            "-P", str(workdir / "gearmand.pid"), *args]
    return ServerProcess(argv, host, port, workdir)
