"""Submit one job to `reverse` and watch it progress.

    python docs/examples/reverse_client.py Rasmus    # prints 10% ... 100%, then sumsaR
"""

import asyncio
import sys

from geartrain import AsyncClient, Job


def progress(job: Job, numerator: int, denominator: int) -> None:
    print(f"{numerator * 100 // denominator}% Complete")


async def main(text: str) -> None:
    async with AsyncClient() as client:
        result = await client.submit("reverse", text.encode(), on_status=progress, timeout=30)
        print(result.decode())


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "Rasmus"))
