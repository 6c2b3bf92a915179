"""The `--workers` supervisor: binds the listeners once, starts N workers on
them, restarts a worker that dies, forwards SIGHUP (reload) and
SIGTERM/SIGINT (drain) to every worker and serves the one control socket
(`sipr.workers.control`). docs/workers.md, decision 0050."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sipr import _loop, logs
from sipr.workers import (
    NONCE_SECRET_ENV,
    NONCE_STORE_ENV,
    STANDBY_ENV,
    WORKER_ENV,
    WorkerSpec,
    sockets,
)
from sipr.workers.process import Holder, Worker

log = logging.getLogger("sipr.workers")

#: How long the first start of every worker may take (imports, the app's on_startup).
START_SECONDS = 60.0
#: A worker that dies sooner than this after its start is restarted after a
#: growing pause (a crash loop must not spin); otherwise at once.
STABLE_SECONDS = 2.0
MAX_RESTART_PAUSE = 5.0
#: The line a worker prints once it serves (its own addresses are not ours to announce).
READY_MARK = "sipr: listening on "
#: A worker's own control socket: the supervisor's is the one to announce.
CTL_MARK = "sipr: control socket "


class Supervisor:
    def __init__(
        self,
        params: dict[str, Any],
        listen: list[tuple[str, str, int]],
        count: int,
        control: Any,
        *,
        standby: bool = True,
    ) -> None:
        self.params = params
        self.listen = listen
        self.count = count
        self.control_config = control
        self.workers = [Worker(i) for i in range(count)]
        self.stopping = asyncio.Event()
        self.signals = 0
        self.started = time.monotonic()
        self.listeners: sockets.Listeners | None = None
        self.shared: list[tuple[str, str, int]] = []
        self.run_dir = Path(tempfile.mkdtemp(prefix="sipr-workers-"))
        self.env = dict(os.environ)
        # One nonce secret for every worker: a nonce one issued, any verifies.
        self.env.setdefault(NONCE_SECRET_ENV, os.urandom(32).hex())
        # ... and one nonce-count table: a replay is refused by all (0051).
        self.env.setdefault(NONCE_STORE_ENV, f"sqlite://{self.run_dir / 'nonces.db'}")
        self.tasks: set[asyncio.Task[None]] = set()
        #: A warm process ready to take the place of a worker that dies.
        self.standby: asyncio.subprocess.Process | None = None
        self.standby_holder = Holder()
        self.use_standby = standby

    # -- workers ------------------------------------------------------------

    def _spec(self, w: Worker) -> WorkerSpec:
        assert self.listeners is not None
        params = {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in self.params.items()
            if k not in ("http", "http_token", "no_ctl")
        }
        params.update(workers="1", ctl=str(w.ctl), listen=self.listeners.uris[w.index])
        return WorkerSpec(
            w.index, self.listeners.uris[w.index], self.listeners.fds(w.index), params
        )

    async def _start(self, w: Worker) -> None:
        assert self.listeners is not None
        w.ctl = self.run_dir / f"worker-{w.index}.ctl"
        w.ready = asyncio.Event()
        env = {**self.env, WORKER_ENV: self._spec(w).encode()}
        w.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sipr.workers",
            env=env,
            pass_fds=self.listeners.fds(w.index),
            stdin=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self._started(w, w.proc)
        self._spawn(self._relay_output(Holder(w), w.proc))

    def _started(self, w: Worker, proc: asyncio.subprocess.Process) -> None:
        w.started = time.monotonic()
        w.started_wall = time.time()
        self._spawn(self._watch(w, proc))

    async def _start_standby(self) -> None:
        """Starts the warm standby: it inherits every worker's sockets and
        waits, imports done, for the index of the worker to replace."""
        assert self.listeners is not None
        specs = [self._spec(w).encode() for w in self.workers]
        env = {**self.env, STANDBY_ENV: json.dumps(specs)}
        fds = [fd for w in self.workers for fd in self.listeners.fds(w.index)]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sipr.workers",
            env=env,
            pass_fds=fds,
            stdin=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        self.standby, self.standby_holder = proc, Holder()
        self._spawn(self._relay_output(self.standby_holder, proc))
        self._spawn(self._watch_standby(proc))

    async def _watch_standby(self, proc: asyncio.subprocess.Process) -> None:
        await proc.wait()
        if self.standby is proc:  # died before taking over: replace it
            self.standby = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 1.0)
            if not self.stopping.is_set():
                await self._start_standby()

    async def _take_over(self, w: Worker) -> bool:
        """The standby becomes worker `w`; False when there is none."""
        proc = self.standby
        if proc is None or proc.returncode is not None or proc.stdin is None:
            return False
        self.standby = None
        w.ctl = self.run_dir / f"worker-{w.index}.ctl"
        w.ready = asyncio.Event()
        w.proc = proc
        self.standby_holder.worker = w
        proc.stdin.write(f"{w.index}\n".encode())
        with contextlib.suppress(ConnectionError):
            await proc.stdin.drain()
        self._started(w, proc)
        await self._start_standby()
        return True

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _relay_output(self, holder: Holder, proc: asyncio.subprocess.Process) -> None:
        """A worker's stderr goes to ours, except its "listening on" lines
        (its private ports): the first tells us it serves."""
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            text = line.decode(errors="replace")
            if READY_MARK in text:
                if holder.worker is not None:
                    holder.worker.ready.set()
                continue
            if CTL_MARK in text:
                continue
            sys.stderr.write(text)
            sys.stderr.flush()

    async def _watch(self, w: Worker, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        w.last_exit = code
        if self.stopping.is_set():
            return
        lived = time.monotonic() - w.started
        w.quick_crashes = w.quick_crashes + 1 if lived < STABLE_SECONDS else 0
        pause = 0.0 if w.quick_crashes <= 1 else min(MAX_RESTART_PAUSE, 0.1 * 2**w.quick_crashes)
        log.warning(
            "worker %d (pid %d) exited with %s after %.1f s: restarting%s",
            w.index,
            proc.pid,
            _exit_text(code),
            lived,
            f" in {pause:.1f} s" if pause else "",
        )
        if pause:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), pause)
            if self.stopping.is_set():
                return
        w.restarts += 1
        if not await self._take_over(w):
            await self._start(w)

    def return_ports(self, index: int) -> list[str]:
        """Worker `index`'s private UDP return addresses (listed before the shared ones)."""
        if self.listeners is None:
            return []
        shared = {sockets.uri(*addr) for addr in self.listeners.shared}
        return [u for u in self.listeners.uris[index] if u not in shared]

    # -- signals ------------------------------------------------------------

    def _forward(self, sig: int) -> None:
        for w in self.workers:
            if w.alive():
                assert w.proc is not None
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(sig)

    def on_stop(self, sig: int) -> None:
        """SIGTERM/SIGINT: no more restarts, every worker drains (a second
        signal makes them stop waiting)."""
        self.signals += 1
        self.stopping.set()
        self._forward(sig)
        standby, self.standby = self.standby, None
        if standby is not None and standby.stdin is not None:
            standby.stdin.close()  # it reads end of file and exits

    def on_reload(self) -> None:
        log.info("SIGHUP: reloading %d workers", self.count)
        self._forward(signal.SIGHUP)

    # -- main ---------------------------------------------------------------

    async def run(self) -> int:
        from sipr.workers.control import WorkersControl

        loop = asyncio.get_running_loop()
        self.listeners = sockets.bind(self.listen, self.count)
        self.shared = self.listeners.shared
        control: WorkersControl | None = None
        try:
            for w in self.workers:
                await self._start(w)
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.on_stop, sig)
            loop.add_signal_handler(signal.SIGHUP, self.on_reload)
            if self.use_standby:
                await self._start_standby()
            if not await self._all_ready():
                self.on_stop(signal.SIGTERM)
                await self._wait_all()
                return 1
            control = WorkersControl(self, self.control_config)
            await control.start()
            for transport, host, port in self.listeners.shared:
                shown = f"[{host}]" if ":" in host else host
                logs.announce(f"sipr: listening on {transport}:{shown}:{port}")
            logs.announce(f"sipr: {self.count} workers serving")
            await self.stopping.wait()
            codes = await self._wait_all()
            return 0 if all(c == 0 for c in codes) and self.signals < 2 else 1
        finally:
            if control is not None:
                await control.stop()
            for task in list(self.tasks):
                task.cancel()
            self.listeners.close()
            shutil.rmtree(self.run_dir, ignore_errors=True)

    async def _all_ready(self) -> bool:
        """Every worker serves; False (after one line naming it) when one
        exits or hangs on its first start."""
        deadline = time.monotonic() + START_SECONDS
        for w in self.workers:
            while not w.ready.is_set():
                if self.stopping.is_set():
                    return False
                if w.restarts or (w.proc is not None and w.proc.returncode is not None):
                    print(f"sipr: error: worker {w.index} failed to start", file=sys.stderr)
                    return False
                if time.monotonic() > deadline:
                    print(
                        f"sipr: error: worker {w.index} not serving after {START_SECONDS:.0f} s",
                        file=sys.stderr,
                    )
                    return False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(w.ready.wait(), 0.2)
        return True

    async def _wait_all(self) -> list[int]:
        codes = []
        for w in self.workers:
            if w.proc is not None:
                codes.append(await w.proc.wait())
        # Let the output relays flush what the workers wrote last.
        await asyncio.gather(*list(self.tasks), return_exceptions=True)
        return codes


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"


def supervise(
    params: dict[str, Any],
    listen: list[tuple[str, str, int]],
    count: int,
    control: Any,
    *,
    log_level: str,
    log_format: str,
    event_loop: str,
) -> int:
    """Runs the supervisor until SIGTERM/SIGINT; the exit status is 0 when
    every worker drained cleanly."""
    logs.setup(log_level, log_format)
    return _loop.run(Supervisor(params, listen, count, control).run(), event_loop)
