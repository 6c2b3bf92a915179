"""The supervisor's control plane: one `sipr ctl` socket (and `--http`) for
all workers. Statistics are summed, commands that change state go to every
worker, `workers` lists them, the rest is answered by one worker (the
registrations store is shared by all). docs/workers.md."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from typing import Any, Protocol

from sipr.control.rpc import APP_ERROR, INTERNAL_ERROR, INVALID_REQUEST, PARSE_ERROR, RpcError
from sipr.workers.process import Worker


class Supervisor(Protocol):
    """What the control plane reads of `sipr.workers.supervisor.Supervisor`."""

    workers: list[Worker]
    count: int
    started: float
    #: (transport, host, port) of the shared listeners.
    shared: list[tuple[str, str, int]]

    def return_ports(self, index: int) -> list[str]: ...


#: How long one worker may take to answer a forwarded call.
WORKER_TIMEOUT = 30.0
MAX_ANSWER_BYTES = 64 << 20
#: Answered with every worker's numbers added up.
SUMMED = {"stats.get", "tm.stats"}
#: Sent to every worker: each holds its own copy of what they change.
BROADCAST = {"app.reload", "cfg.set", "stats.reset", "dns.flush", "dst.blocklist_remove"}
#: stats.get keys every worker reports about the same shared thing, or that
#: are not amounts: the largest is kept, not the sum.
NOT_ADDED = {
    "registrations.aors",
    "registrations.bindings",
    "process.uptime_seconds",
    "loop.lag_ms",
}
NOT_SHOWN = {"process.pid"}

#: Methods the supervisor answers itself: usage, description.
LOCAL_HELP = {
    "workers": (
        "workers",
        "The worker processes: pid, state, uptime, restarts, requests, suspended, CPU.",
    ),
    "workers.stats": (
        "workers.stats [PREFIX]",
        "Statistics per worker and summed, optionally only those starting with PREFIX.",
    ),
}

_ids = itertools.count(1)


async def call_worker(w: Worker, method: str, params: Any) -> Any:
    """One JSON-RPC call on a worker's own control socket; RpcError when it
    refuses, is down or does not answer."""
    if not w.alive():
        raise RpcError(APP_ERROR, f"worker {w.index} is not running")
    request = {"jsonrpc": "2.0", "id": next(_ids), "method": method}
    if params is not None:
        request["params"] = params
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(str(w.ctl), limit=MAX_ANSWER_BYTES), WORKER_TIMEOUT
        )
    except (OSError, TimeoutError) as e:
        raise RpcError(APP_ERROR, f"worker {w.index} control socket: {e}") from None
    try:
        writer.write(json.dumps(request).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), WORKER_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as e:
        raise RpcError(APP_ERROR, f"worker {w.index} did not answer {method}: {e}") from None
    finally:
        writer.close()
    if not line:
        raise RpcError(APP_ERROR, f"worker {w.index} closed its control socket")
    answer = json.loads(line)
    if "error" in answer:
        err = answer["error"]
        raise RpcError(err.get("code", APP_ERROR), err.get("message", "error"))
    return answer.get("result")


def add_up(results: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for result in results:
        for key, value in result.items():
            if key in NOT_SHOWN or not isinstance(value, (int, float)):
                continue
            if key in NOT_ADDED:
                out[key] = max(out.get(key, value), value)
            else:
                out[key] = out.get(key, 0) + value
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (/proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


class Aggregator:
    """The JSON-RPC handler behind the supervisor's listeners (the
    `handle(raw)` a `UnixListener` needs of its registry)."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.sup = supervisor

    def live(self) -> list[Worker]:
        return [w for w in self.sup.workers if w.alive() and w.ready.is_set()]

    async def worker_rows(self) -> list[dict[str, Any]]:
        now = time.time()
        rows = []
        for w in self.sup.workers:
            row: dict[str, Any] = {
                "worker": w.index,
                "pid": w.pid if w.alive() else None,
                "state": "serving" if w.alive() and w.ready.is_set() else "starting",
                "uptime": round(now - w.started_wall, 1) if w.alive() else 0.0,
                "restarts": w.restarts,
                "requests": 0,
                "suspended": 0,
                "cpu_seconds": 0.0,
                "return_ports": ", ".join(self.sup.return_ports(w.index)),
            }
            if not w.alive():
                row["state"] = "down"
            if w.alive() and w.ready.is_set() and w.pid is not None:
                try:
                    got = await call_worker(w, "stats.get", [])
                except RpcError:
                    got = {}
                row["requests"] = sum(v for k, v in got.items() if k.startswith("requests_in."))
                row["suspended"] = got.get("handlers.suspended", 0)
                row["cpu_seconds"] = round(cpu_seconds(w.pid), 2)
            rows.append(row)
        return rows

    async def stats_by_worker(self, prefix: str = "") -> list[dict[str, Any]]:
        """One row per statistic: each worker's value and the sum."""
        if not isinstance(prefix, str):
            raise RpcError(APP_ERROR, "workers.stats [PREFIX]: PREFIX must be a string")
        got = await self.per_worker("stats.get", [prefix])
        summed = add_up([r for _, r in got])
        rows = []
        for key in sorted(summed):
            row: dict[str, Any] = {"stat": key}
            for index, result in got:
                row[f"w{index}"] = result.get(key)
            row["all"] = summed[key]
            rows.append(row)
        return rows

    async def per_worker(self, method: str, params: Any = None) -> list[tuple[int, Any]]:
        live = self.live()
        if not live:
            raise RpcError(APP_ERROR, "no worker is serving")
        got = await asyncio.gather(*(call_worker(w, method, params) for w in live))
        return [(w.index, r) for w, r in zip(live, got, strict=True)]

    async def call(self, method: str, params: Any) -> Any:
        if method == "workers":
            return await self.worker_rows()
        if method == "workers.stats":
            return await self.stats_by_worker(*(params or []))
        if method == "core.uptime":
            up = time.monotonic() - self.sup.started
            return {"uptime": round(up, 3), "workers": self.sup.count}
        if method in SUMMED:
            results = [r for _, r in await self.per_worker(method, params)]
            out = add_up(results)
            if method == "stats.get":
                out["workers.count"] = self.sup.count
                out["workers.serving"] = len(results)
                out["workers.restarts"] = sum(w.restarts for w in self.sup.workers)
            return dict(sorted(out.items()))
        if method in BROADCAST:
            results = await self.per_worker(method, params)
            first = results[0][1]
            if isinstance(first, dict):
                return {**first, "workers": len(results)}
            return first
        live = self.live()
        if not live:
            raise RpcError(APP_ERROR, "no worker is serving")
        result = await call_worker(live[0], method, params)
        if method == "system.listMethods" and isinstance(result, list):
            result = sorted({*result, *LOCAL_HELP})
        return result

    async def handle(self, raw: bytes) -> dict[str, Any] | list[Any] | None:
        try:
            msg = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            return _error(None, PARSE_ERROR, f"parse error: {e}")
        if isinstance(msg, list):
            out = [r for r in [await self._one(m) for m in msg] if r is not None]
            return out or None
        return await self._one(msg)

    async def _one(self, msg: Any) -> dict[str, Any] | None:
        if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0":
            return _error(None, INVALID_REQUEST, 'not a JSON-RPC 2.0 request ("jsonrpc": "2.0")')
        req_id, method = msg.get("id"), msg.get("method")
        if not isinstance(method, str):
            return _error(req_id, INVALID_REQUEST, "method must be a string")
        params = msg.get("params")
        asked = params[0] if isinstance(params, list) and params else None
        if isinstance(params, dict):
            asked = params.get("name")
        if method == "system.methodHelp" and asked in LOCAL_HELP:
            usage, text = LOCAL_HELP[asked]
            result: Any = {"name": asked, "usage": usage, "help": text}
        else:
            try:
                result = await self.call(method, msg.get("params"))
            except RpcError as e:
                return None if "id" not in msg else _error(req_id, e.code, e.message)
            except Exception as e:  # a worker's answer we could not read
                return _error(req_id, INTERNAL_ERROR, f"{method} failed: {e}")
        return None if "id" not in msg else {"jsonrpc": "2.0", "id": req_id, "result": result}


def _error(req_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": req_id, "error": {"code": code, "message": message}}


class WorkersControl:
    """The supervisor's `--ctl` socket and `--http` listener."""

    def __init__(self, supervisor: Supervisor, config: Any) -> None:
        self.sup = supervisor
        self.config = config
        self.registry = Aggregator(supervisor)
        self.started = supervisor.started
        self.listeners: list[Any] = []

    async def start(self) -> None:
        from sipr.control.unix import UnixListener
        from sipr.logs import announce
        from sipr.paths import instance_ctl_socket
        from sipr.workers.http import WorkersHttp

        config = self.config
        if config is None:
            return
        path = config.ctl_socket
        if path is None and config.default_socket and self.sup.shared:
            path = instance_ctl_socket(self.sup.shared[0])
        try:
            if path is not None:
                unix = UnixListener(self.registry, path)  # type: ignore[arg-type]
                await unix.start()
                self.listeners.append(unix)
                announce(f"sipr: control socket {path}")
            if config.http is not None:
                host, port = config.http
                http = WorkersHttp(self, host, port, config.http_token)
                await http.start()
                self.listeners.append(http)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for listener in reversed(self.listeners):
            await listener.stop()
        self.listeners.clear()

    async def metrics(self) -> bytes:
        """/metrics: every worker's statistics, each sample labelled `worker`."""
        from sipr.control.metrics import render_labelled

        got = await self.registry.per_worker("stats.get", [])
        return render_labelled([({"worker": str(i)}, r) for i, r in got])
