"""The examples in docs/examples run as documented, against both servers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.process import REPO, ServerProcess
from tests.support.wire import status_of, wait_until

EXAMPLES = REPO / "docs" / "examples"


def _env(srv: ServerProcess) -> dict[str, str]:
    return dict(os.environ, GEARMAN_SERVERS=f"{srv.host}:{srv.port}", PYTHONPATH=str(REPO))


def _run(script: str, srv: ServerProcess, *args: str) -> str:
    res = subprocess.run([sys.executable, str(EXAMPLES / script), *args], env=_env(srv),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout


@pytest.fixture(params=["reverse_worker.py", "blocking_worker.py"])
def worker(request: pytest.FixtureRequest, any_server: ServerProcess) -> Iterator[ServerProcess]:
    proc = subprocess.Popen([sys.executable, str(EXAMPLES / request.param)], env=_env(any_server),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: (status_of(any_server.address, "reverse") or (0, 0, 0))[2] == 1,
                          timeout=15), "the example worker did not register"
        yield any_server
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        assert "Traceback" not in err, err


def test_reverse_client(worker: ServerProcess) -> None:
    out = _run("reverse_client.py", worker, "Rasmus")
    assert out == "".join(f"{i * 10}% Complete\n" for i in range(1, 11)) + "sumsaR\n"


def test_events_client(worker: ServerProcess) -> None:
    lines = _run("events_client.py", worker).splitlines()
    assert lines[0].startswith("created H:")
    assert lines[1:-1] == [f"progress {i}/10" for i in range(1, 11)]
    assert lines[-1] == "result !dlroW olleH"


def test_background_status(worker: ServerProcess) -> None:
    lines = _run("background_status.py", worker).splitlines()
    assert lines[0].startswith("submitted H:")
    assert lines[-1] == "known=False running=False 0/0"
    assert any(line.startswith("known=True running=True ") for line in lines), lines


def test_many_jobs(worker: ServerProcess) -> None:
    out = _run("many_jobs.py", worker)
    assert out == "one -> eno\ntwo -> owt\nthree -> eerht\nqueued 3 background jobs\n"


def test_examples_are_all_tested() -> None:
    tested = {"reverse_worker.py", "blocking_worker.py", "reverse_client.py", "events_client.py",
              "background_status.py", "many_jobs.py"}
    assert {p.name for p in Path(EXAMPLES).glob("*.py")} == tested


def test_readme_library_example(server: ServerProcess) -> None:
    """The README's Python example runs (pointed at a test server) and prints what it says."""
    import re

    readme = (REPO / "README.md").read_text()
    match = re.search(r"## Python library\n\n```python\n(.*?)```", readme, re.S)
    assert match, "README lost its Python library example"
    code = match.group(1).replace("127.0.0.1:4730", f"{server.host}:{server.port}")
    res = subprocess.run([sys.executable, "-c", code], env=_env(server), capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[:10] == [f"{i}/10" for i in range(1, 11)]
    assert lines[10] == "b'sumsaR'"
    assert lines[11].startswith("JobStatus(handle='H:") and "known=True" in lines[11]
