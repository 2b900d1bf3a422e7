"""The HTTP tests' server: geartrain with its HTTP port (tests.http.util.start),
stopped after the test, whose log must show no traceback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.http.util import Served, start


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    srv, port = start(tmp_path)
    yield srv, port
    srv.stop()
    assert "Traceback" not in srv.log(), srv.log()
