"""Helpers for the interop tests: real third-party clients run as subprocesses.

Everything here starts real programs (``gearman``, ``gearadmin``, ``php``) against a
real server and waits on observable server state (admin ``status``), never on
fixed sleeps. Long-running helpers (workers) are started through :class:`Procs`,
whose owner (a fixture) kills each process group it started when the test ends.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tests.support.wire import admin, status_of

HERE = Path(__file__).resolve().parent
PHP_DIR = HERE / "php"
PHP_WORKER = PHP_DIR / "worker.php"
TIMEOUT_MS = "10000"  # libgearman timeout of every `gearman` client call
RUN_TIMEOUT = 30.0  # seconds a single subprocess call may take


def require(*programs: str) -> None:
    """Fail (not skip: the suite is meant to run where the tools are installed)."""
    missing = [p for p in programs if shutil.which(p) is None]
    assert not missing, f"interop tests need {missing} on PATH (Debian: gearman-tools php-cli php-gearman)"


def server_env(address: tuple[str, int]) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("GEARMAN_SERVER", None)  # it would override -h/-p of the gearman tool
    env["GEARMAN_HOST"], env["GEARMAN_PORT"] = address[0], str(address[1])
    env["LC_ALL"] = "C"
    return env


def gearman_argv(address: tuple[str, int], *args: str, line_buffered: bool = False) -> list[str]:
    """argv of the `gearman` tool against *address*. With *line_buffered*, under
    ``stdbuf -oL``: the tool prints status lines with stdio but results with
    write(2), so only line-buffering gives the order a terminal shows."""
    argv = ["gearman", "-t", TIMEOUT_MS, "-h", address[0], "-p", str(address[1]), *args]
    return ["stdbuf", "-oL", *argv] if line_buffered else argv


def gearadmin_argv(address: tuple[str, int], *args: str) -> list[str]:
    return ["gearadmin", "-h", address[0], "-p", str(address[1]), *args]


def run(argv: Sequence[str], address: tuple[str, int], *, input: bytes | None = None,
        timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[bytes]:
    """Run a client to completion (stdin closed unless *input*); always bounded."""
    return subprocess.run(
        list(argv), input=input, stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True, timeout=timeout, env=server_env(address),
    )


def gearman(address: tuple[str, int], *args: str, input: bytes | None = None,
            line_buffered: bool = False) -> subprocess.CompletedProcess[bytes]:
    return run(gearman_argv(address, *args, line_buffered=line_buffered), address, input=input)


def gearadmin(address: tuple[str, int], *args: str) -> subprocess.CompletedProcess[bytes]:
    return run(gearadmin_argv(address, *args), address)


def php(address: tuple[str, int], script: str, *args: str, timeout: float = RUN_TIMEOUT) -> Any:
    """Run tests/interop/php/SCRIPT; it must exit 0 and print one JSON document."""
    proc = run(["php", str(PHP_DIR / script), *args], address, timeout=timeout)
    detail = f"php {script} rc={proc.returncode}\nstdout: {proc.stdout!r}\nstderr: {proc.stderr!r}"
    assert proc.returncode == 0, detail
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(detail) from None


class Procs:
    """Background subprocesses of one test, each in its own process group.

    ``stop()`` (run by the fixture's finalizer) sends SIGTERM to each group it
    started whose leader still runs, then SIGKILL to what is left, so commands
    run by ``gearman -w`` die with the tool. Groups are only signalled while
    their leader is unreaped, so the id cannot belong to anyone else.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[tuple[subprocess.Popen[bytes], Path, Path]] = []

    def spawn(self, argv: Sequence[str], address: tuple[str, int],
              name: str = "proc") -> subprocess.Popen[bytes]:
        n = len(self.started)
        out, err = self.workdir / f"{name}-{n}.out", self.workdir / f"{name}-{n}.err"
        with open(out, "wb") as fo, open(err, "wb") as fe:
            proc = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=fo, stderr=fe,
                env=server_env(address), start_new_session=True,
            )
        self.started.append((proc, out, err))
        return proc

    def php_worker(self, address: tuple[str, int], step: float = 0.05,
                   record: Path | None = None) -> subprocess.Popen[bytes]:
        argv = ["php", str(PHP_WORKER), str(step)]
        if record is not None:
            argv.append(str(record))
        return self.spawn(argv, address, name="php-worker")

    def gearman_worker(self, address: tuple[str, int], *args: str) -> subprocess.Popen[bytes]:
        return self.spawn(gearman_argv(address, "-w", *args), address, name="gearman-worker")

    def output(self, proc: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
        for p, out, err in self.started:
            if p is proc:
                return out.read_bytes(), err.read_bytes()
        raise KeyError(proc)

    def terminate(self, proc: subprocess.Popen[bytes], timeout: float = 5.0) -> int:
        """Stop one background process (its whole group) and reap it."""
        if proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)  # still unreaped: its pid cannot be reused
                proc.wait(timeout)
        return proc.returncode

    def stop(self) -> None:
        """SIGTERM to every group still led by a live process, then SIGKILL to the stubborn."""
        live = [proc for proc, _, _ in self.started if proc.poll() is None]
        for proc in live:
            _signal_group(proc, signal.SIGTERM)
        for proc in live:
            self.terminate(proc, timeout=3)
        self.started.clear()


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the group this process leads (start_new_session)
    except (ProcessLookupError, PermissionError):
        pass


# ---------------------------------------------------------------- waiting on the server


def poll(predicate: Callable[[], Any], what: str, timeout: float = 10.0, step: float = 0.02) -> Any:
    """Return the first truthy value of *predicate*; fail the test after *timeout*."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {value!r})")
        time.sleep(step)


def wait_workers(address: tuple[str, int], function: str, n: int = 1, timeout: float = 10.0) -> None:
    """Wait until admin `status` shows at least *n* workers for *function*."""
    def ready() -> bool:
        st = status_of(address, function)
        return st is not None and st[2] >= n
    poll(ready, f"{n} worker(s) for {function!r} in status", timeout)


def wait_status(address: tuple[str, int], function: str, expected: tuple[int, int, int],
                timeout: float = 10.0) -> None:
    """Wait until `status` of *function* is exactly (total, running, workers)."""
    poll(lambda: status_of(address, function) == expected, f"status {function} == {expected}", timeout)


def status_lines(address: tuple[str, int], command: str = "status") -> dict[str, list[int]]:
    """`status`/`prioritystatus` as {function: [numbers...]}."""
    out: dict[str, list[int]] = {}
    for line in admin(address, command)[0].decode().splitlines():
        if line == ".":
            break
        name, *nums = line.split("\t")
        out[name] = [int(n) for n in nums]
    return out


def wait_exit(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{proc.args!r} still running after {timeout}s") from None
