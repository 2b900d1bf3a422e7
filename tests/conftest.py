"""Shared fixtures: real server processes on free ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import process


@pytest.fixture
def server(tmp_path) -> Iterator[process.ServerProcess]:  # type: ignore[no-untyped-def]
    """A fresh `geartrain server` process on 127.0.0.1."""
    workdir = tmp_path / "geartrain"
    workdir.mkdir()
    srv = process.geartrain(workdir=workdir).start()
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log(), srv.log()


@pytest.fixture
def gearmand(tmp_path) -> Iterator[process.ServerProcess]:  # type: ignore[no-untyped-def]
    """A fresh C gearmand 1.1.20 (-t 0) on 127.0.0.1, the reference."""
    workdir = tmp_path / "gearmand"
    workdir.mkdir()
    srv = process.gearmand(workdir=workdir).start()
    yield srv
    srv.stop()


@pytest.fixture(params=["geartrain", "gearmand"])
def any_server(request, tmp_path) -> Iterator[process.ServerProcess]:  # type: ignore[no-untyped-def]
    """Each test runs against geartrain and against C gearmand."""
    factory = process.geartrain if request.param == "geartrain" else process.gearmand
    workdir = tmp_path / request.param
    workdir.mkdir()
    srv = factory(workdir=workdir).start()
    yield srv
    srv.stop()
    if request.param == "geartrain":
        assert "Traceback" not in srv.log(), srv.log()
