"""The walkthrough's worker: reverses the workload, reporting progress ten times.

    python docs/examples/reverse_worker.py          # serves until Ctrl-C
"""

import asyncio

from geartrain import AsyncWorker, WorkerJob

worker = AsyncWorker(concurrency=4)  # servers from $GEARMAN_SERVERS, else 127.0.0.1:4730


@worker.function("reverse")
async def reverse(job: WorkerJob) -> bytes:
    for i in range(1, 11):
        job.send_status(i, 10)  # clients see 10% ... 100%
        await asyncio.sleep(0.01)
    return job.payload[::-1]


if __name__ == "__main__":
    from geartrain.worker import run_until_signalled

    asyncio.run(run_until_signalled(worker))  # SIGINT/SIGTERM stop it gracefully
