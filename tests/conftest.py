"""Shared fixtures: real server processes on free ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import process


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A test that failed before stopping its servers must not leave them running."""
    process.kill_leftovers()


def _serve(kind: str, tmp_path: Path) -> Iterator[process.ServerProcess]:
    """Start a fresh *kind* server in its own work directory; stop it after the test.

    A geartrain server's log must not contain a traceback: an exception that
    reached the event loop is a bug even when the test's assertions passed.
    """
    workdir = tmp_path / kind
    workdir.mkdir()
    factory = process.geartrain if kind == "geartrain" else process.gearmand
    srv = factory(workdir=workdir).start()
    yield srv
    srv.stop()
    if kind == "geartrain":
        assert "Traceback" not in srv.log(), srv.log()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[process.ServerProcess]:
    """A fresh `geartrain server` process on 127.0.0.1."""
    yield from _serve("geartrain", tmp_path)


@pytest.fixture
def gearmand(tmp_path: Path) -> Iterator[process.ServerProcess]:
    """A fresh C gearmand 1.1.20 (-t 0) on 127.0.0.1, the reference."""
    yield from _serve("gearmand", tmp_path)


@pytest.fixture(params=["geartrain", "gearmand"])
def any_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[process.ServerProcess]:
    """Each test runs against geartrain and against C gearmand."""
    yield from _serve(request.param, tmp_path)
