"""Fixtures of the interop tests.

``target`` is the server the third-party clients talk to: geartrain. Setting
``GEARTRAIN_INTEROP_TARGET=gearmand`` runs the same tests against C gearmand
1.1.20 instead, which checks the tests' expectations against the reference
(tests that compare the two servers always start both).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.interop.util import Procs, require
from tests.support import process


@pytest.fixture
def target(request: pytest.FixtureRequest) -> process.ServerProcess:
    name = os.environ.get("GEARTRAIN_INTEROP_TARGET", "geartrain")
    assert name in ("geartrain", "gearmand"), f"GEARTRAIN_INTEROP_TARGET={name!r}"
    return request.getfixturevalue("server" if name == "geartrain" else "gearmand")  # type: ignore[no-any-return]


@pytest.fixture
def procs(tmp_path) -> Iterator[Procs]:  # type: ignore[no-untyped-def]
    """Background clients/workers of a test; all killed (by process group) at teardown."""
    require("gearman", "gearadmin", "php", "stdbuf")
    p = Procs(tmp_path)
    yield p
    p.stop()
