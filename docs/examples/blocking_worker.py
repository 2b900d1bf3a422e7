"""The same reverse worker with the blocking API (plain function, thread pool)."""

import time

from geartrain import Worker, WorkerJob

worker = Worker(concurrency=2)


@worker.function("reverse")
def reverse(job: WorkerJob) -> bytes:
    for i in range(1, 11):
        job.send_status(i, 10)
        time.sleep(0.01)
    return job.payload[::-1]


if __name__ == "__main__":
    worker.work()  # until Ctrl-C (or worker.stop() from another thread)
