"""Several jobs at once, gathered concurrently (PHP's addTask + runTasks)."""

import asyncio

from geartrain import AsyncClient, Request


async def main() -> None:
    async with AsyncClient() as client:
        words = [b"one", b"two", b"three"]
        results = await client.run([Request("reverse", w) for w in words], timeout=30)
        for word, result in zip(words, results, strict=True):
            print(word.decode(), "->", result.decode())
        handles = await client.submit_background_many(
            [Request("reverse", w, priority="low") for w in words])
        print("queued", len(handles), "background jobs")


if __name__ == "__main__":
    asyncio.run(main())
