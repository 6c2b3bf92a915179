"""Test app for suspension, deadlines, stalls, periodic jobs and queues.
Behaviour is chosen by the Request-URI user part."""

import asyncio
import time

import sipr

app = sipr.App(route_deadline=0.5, deadline_reply=(503, "Route Deadline"), stall_threshold=0.1)
ticks = 0
done: list[str] = []
notes = app.queue("notes", maxsize=2)


@app.every(0.05)
async def tick() -> None:
    global ticks
    ticks += 1


@notes.consumer
async def consume(item: str) -> None:
    await asyncio.sleep(0.01)
    done.append(item)


@app.route
async def route(req: sipr.Request) -> None:
    user = req.uri.user
    if user == "never":  # billing that never answers
        await asyncio.Event().wait()
    elif user == "long":  # extends its own deadline
        req.deadline = 2.0
        await asyncio.sleep(1.0)
        req.reply(200)
    elif user == "block":  # blocks the loop: the watchdog must say so
        time.sleep(0.4)
        req.reply(200)
    elif user == "ticks":
        req.reply(200, headers={"X-Ticks": str(ticks)})
    elif user == "queue":
        try:
            notes.put_nowait(req.call_id)
            req.reply(202)
        except sipr.QueueFull:
            req.reply(503)
    elif user == "processed":
        req.reply(200, headers={"X-Done": ",".join(done)})
    elif user == "stats":
        st = app.stats()
        req.reply(200, headers={f"X-{k.replace('.', '-')}": str(v) for k, v in st.items()})
    else:
        await asyncio.sleep(0)
        req.reply(200)
