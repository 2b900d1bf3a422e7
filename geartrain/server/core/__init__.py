"""The job server core: pure, deterministic, no I/O (see server.py)."""

from geartrain.server.core.function import Function
from geartrain.server.core.job import Job, JobState, Priority
from geartrain.server.core.peer import Peer
from geartrain.server.core.server import JobServer
from geartrain.server.core.settings import CoreSettings

__all__ = ["CoreSettings", "Function", "Job", "JobServer", "JobState", "Peer", "Priority"]
