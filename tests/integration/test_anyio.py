"""Handlers and background jobs on anyio (issue 13): a route handler may use
anyio's primitives (`fail_after`, task groups, `to_thread`), and the app's
`@app.every` jobs, work queues and startup/shutdown hooks run on anyio."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import header, status_of
from tests.integration.runtime_kit import ask, wait_for, wait_for_log

ANYIO_APP = """
import logging
import threading

import anyio

import sipr

app = sipr.App()
ticks = 0
cdrs = app.queue("cdr", maxsize=10)
seen = []
log = logging.getLogger("anyio_app")


@app.on_startup
async def started() -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(anyio.sleep, 0)
    log.warning("anyio app: started")


@app.every(0.05)
async def tick() -> None:
    global ticks
    ticks += 1
    await anyio.sleep(0)


@cdrs.consumer
async def consume(item: str) -> None:
    await anyio.to_thread.run_sync(seen.append, item)


@app.on_shutdown
async def stopped() -> None:
    with anyio.fail_after(5):
        await anyio.sleep(0)
    log.warning("anyio app: stopped after %d item(s)", len(seen))


@app.route
async def route(req: sipr.Request) -> None:
    user = req.uri.user
    if user == "timeout":
        try:
            with anyio.fail_after(0.05):
                await anyio.sleep(30)
        except TimeoutError:
            return req.reply(504, "anyio fail_after")
        return req.reply(500)
    if user == "group":
        order = []

        async def one(n: int) -> None:
            await anyio.sleep(0.02 * n)
            order.append(n)

        async with anyio.create_task_group() as tg:
            for n in (3, 1, 2):
                tg.start_soon(one, n)
        return req.reply(200, headers={"X-Order": ",".join(map(str, order))})
    if user == "thread":
        name = await anyio.to_thread.run_sync(lambda: threading.current_thread().name)
        loop_thread = threading.current_thread().name
        return req.reply(200, headers={"X-Thread": name, "X-Loop": loop_thread})
    if user == "ticks":
        return req.reply(200, headers={"X-Ticks": str(ticks)})
    if user == "queue":
        cdrs.put_nowait(req.call_id)
        with anyio.fail_after(5):
            while req.call_id not in seen:
                await anyio.sleep(0.01)
        return req.reply(200, headers={"X-Seen": str(len(seen))})
    req.reply(404)
"""


def test_handlers_use_anyio_primitives(sipr_factory, tmp_path: Path) -> None:
    script = tmp_path / "anyio_app.py"
    script.write_text(ANYIO_APP)
    proxy = sipr_factory(script)
    wait_for_log(proxy, "anyio app: started")

    timed_out = ask(proxy.tcp, "timeout")
    assert status_of(timed_out) == 504 and b"anyio fail_after" in timed_out

    grouped = ask(proxy.tcp, "group")
    assert status_of(grouped) == 200 and header(grouped, "X-Order") == "1,2,3"

    threaded = ask(proxy.tcp, "thread")
    assert status_of(threaded) == 200
    assert header(threaded, "X-Thread") not in (None, header(threaded, "X-Loop"))

    queued = ask(proxy.tcp, "queue")
    assert status_of(queued) == 200 and header(queued, "X-Seen") == "1"

    def ticks() -> int:
        return int(header(ask(proxy.tcp, "ticks"), "X-Ticks") or "0")

    first = ticks()
    wait_for(lambda: ticks() > first, what="@app.every to tick again")
    assert proxy.stop() == 0
    assert "anyio app: stopped after 1 item(s)" in proxy.log()
