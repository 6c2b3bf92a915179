"""sipr._deadlines: finished handlers do not keep their Task alive until
their deadline (the heap is compacted), and expiry still cancels."""

import asyncio

from sipr._deadlines import Deadlines


def test_finished_entries_are_compacted() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        expired: list[asyncio.Task[None]] = []
        d = Deadlines(loop, expired.append)
        gate = asyncio.Event()

        async def held() -> None:
            try:
                await gate.wait()
            finally:
                d.finished()

        tasks = [loop.create_task(held()) for _ in range(5000)]
        await asyncio.sleep(0)
        for t in tasks:
            d.add(t, loop.time() + 300)
        assert len(d) == 5000
        gate.set()
        await asyncio.gather(*tasks)
        # Without compaction all 5,000 finished Tasks stayed for 300 s.
        assert len(d) <= 1024 + 1, len(d)
        assert expired == []
        d.close()

    asyncio.run(main())


def test_expiry_still_cancels_after_compaction() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        expired: list[asyncio.Task[None]] = []

        def expire(task: asyncio.Task[None]) -> None:
            expired.append(task)
            task.cancel()

        d = Deadlines(loop, expire)

        async def quick() -> None:
            d.finished()

        async def stuck() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                d.finished()

        slow = loop.create_task(stuck())
        d.add(slow, loop.time() + 0.05)
        fast = [loop.create_task(quick()) for _ in range(3000)]
        for t in fast:
            d.add(t, loop.time() + 300)
        await asyncio.gather(*fast)
        await asyncio.wait([slow], timeout=2)
        assert expired == [slow] and slow.cancelled()
        assert len(d) <= 1024, len(d)
        d.close()

    asyncio.run(main())
