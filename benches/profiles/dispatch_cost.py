"""Instructions per handler dispatch on the Python side (issue 14, decision 0067).

Runs N requests through `Server._dispatch` on uvloop with a trivial handler
(`req.forward(...)`) and a stand-in request object, so what is counted is the
dispatch itself: the Task, its first step, `_run`, the bookkeeping. Count it
with callgrind at two sizes and divide the difference:

    for n in 0 20000; do
      valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python benches/profiles/dispatch_cost.py $n 2>&1 | grep Collected
    done

(Collected(20000) - Collected(0)) / 20000 is the figure (benches/README.md,
phase 8: 19.1k before `sipr._core.TaskStarter`, 16.9k after).
"""

from __future__ import annotations

import asyncio
import sys

import uvloop

import sipr
from sipr._eager import EagerTasks
from sipr.server import Server


class StandInRequest:
    """What `_dispatch` and `_run` read of a request, and nothing else."""

    __slots__ = ("_txn", "deadline", "handled", "in_dialog", "method")

    def __init__(self) -> None:
        self._txn = 1
        self.handled = False
        self.method = "INVITE"
        self.in_dialog = False
        self.deadline = None

    def forward(self, hop: str) -> None:
        self.handled = True

    def _finish(self) -> None:
        pass


app = sipr.App()


@app.route
async def route(req: StandInRequest) -> None:  # type: ignore[misc]
    req.forward("sip:127.0.0.1:5090")


def dispatch_all(count: int, loop: asyncio.AbstractEventLoop, done: asyncio.Future[None]) -> None:
    server = Server.__new__(Server)  # only what _dispatch and _run use
    server.app = app
    server.busy = None
    server.eager = False
    server.eager_tasks = EagerTasks(loop)
    server.inline = 0
    server.tasks = set()
    server.cancellable = {}
    server.loop = loop
    server.suspended = 0
    server.default_reply = (500, "Server Internal Error")
    server.expired = set()
    requests = [StandInRequest() for _ in range(count)]
    for req in requests:
        server._dispatch(req)  # type: ignore[arg-type]
    server.eager_tasks.close()
    done.set_result(None)


async def main(count: int) -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.call_soon(dispatch_all, count, loop, done)  # as the server: from a loop callback
    await done


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000))
