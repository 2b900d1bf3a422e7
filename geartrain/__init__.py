"""geartrain: a Gearman job server, client and worker library, and tools.

    from geartrain import AsyncClient, Client, AsyncWorker, Worker, AdminClient
"""

__version__ = "0.1.0"

from geartrain.admin import AdminClient, AsyncAdminClient  # noqa: E402
from geartrain.client import (  # noqa: E402
    AsyncClient,
    Client,
    DataEvent,
    Job,
    JobStatus,
    Priority,
    Request,
    StatusEvent,
    SyncJob,
    UniqueStatus,
    WarningEvent,
)
from geartrain.codecs import JSON, TEXT, Codec  # noqa: E402
from geartrain.errors import (  # noqa: E402
    ConnectionLost,
    GearmanError,
    JobError,
    JobException,
    JobFailed,
    JobTimeout,
    NoServerAvailable,
    QueueFull,
    ResultsUnsupported,
    ServerError,
)
from geartrain.results import JobResult  # noqa: E402
from geartrain.worker import AsyncWorker, Worker, WorkerJob  # noqa: E402

__all__ = [
    "AdminClient", "AsyncAdminClient", "AsyncClient", "AsyncWorker", "Client", "Codec",
    "ConnectionLost", "DataEvent", "GearmanError",
    "JSON", "Job", "JobError", "JobException", "JobFailed", "JobResult", "JobStatus", "JobTimeout",
    "NoServerAvailable", "Priority", "QueueFull", "Request", "ResultsUnsupported", "ServerError",
    "StatusEvent", "SyncJob",
    "TEXT", "UniqueStatus", "WarningEvent", "Worker", "WorkerJob", "__version__",
]
