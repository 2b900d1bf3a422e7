"""Follow a job's events with `async for` instead of callbacks."""

import asyncio

from geartrain import AsyncClient, StatusEvent


async def main() -> None:
    async with AsyncClient() as client:
        job = await client.submit_job("reverse", b"Hello World!")
        print("created", job.handle)
        async for event in job.events():
            if isinstance(event, StatusEvent):
                print(f"progress {event.numerator}/{event.denominator}")
        print("result", (await job).decode())


if __name__ == "__main__":
    asyncio.run(main())
