"""Helpers for the dialog and accounting tests: a small UDP caller that
keeps its dialog (route set, tags, CSeq) so a test can hold a call up, be
sent a BYE, answer keepalives and hang up when it chooses; reading the
accounting database; and a private PostgreSQL cluster."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from tests.conftest import UdpPeer, free_port, header, status_of

T = TypeVar("T")


def wait_for(fn: Callable[[], T], timeout: float, what: str, every: float = 0.1) -> T:
    """Polls `fn` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {value!r})")
        time.sleep(every)


def _first_line(msg: bytes) -> str:
    return msg.split(b"\r\n", 1)[0].decode(errors="replace")


def _headers(msg: bytes, name: str) -> list[str]:
    out = []
    for line in msg.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        k, _, v = line.decode(errors="replace").partition(":")
        if k.strip().lower() == name.lower():
            out.extend(p.strip() for p in v.split(",") if p.strip())
    return out


def _uri_of(name_addr: str) -> str:
    return name_addr.split("<", 1)[1].split(">", 1)[0] if "<" in name_addr else name_addr


@dataclass
class Caller:
    """One call from a UDP socket through the proxy at `proxy`."""

    proxy: tuple[str, int]
    user: str = "alice"
    callee: str = "bob"
    peer: UdpPeer = field(default_factory=UdpPeer)
    call_id: str = field(default_factory=lambda: f"{uuid.uuid4().hex}@127.0.0.1")
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    cseq: int = 1
    to: str = ""
    route: list[str] = field(default_factory=list)
    remote: str = ""
    branch: str = ""
    #: Requests sipr sent to this caller (BYE, keepalive OPTIONS), answered 200.
    received: list[bytes] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.peer.port

    def _via(self, branch: str) -> str:
        return f"SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport"

    def _from(self) -> str:
        return f"<sip:{self.user}@127.0.0.1:{self.port}>;tag={self.tag}"

    def invite(self, timeout: float = 5.0, *, wait: bool = True, extra: str = "") -> int:
        """Sends the INVITE (with `extra` header lines); unless `wait` is
        False, waits for the final answer, ACKs a 2xx and returns the status."""
        self.branch = "z9hG4bK" + uuid.uuid4().hex[:12]
        ruri = f"sip:{self.callee}@{self.proxy[0]}:{self.proxy[1]}"
        self._invite = (
            f"INVITE {ruri} SIP/2.0\r\nVia: {self._via(self.branch)}\r\nMax-Forwards: 70\r\n"
            f"From: {self._from()}\r\nTo: <{ruri}>\r\nCall-ID: {self.call_id}\r\n"
            f"CSeq: {self.cseq} INVITE\r\nContact: <sip:{self.user}@127.0.0.1:{self.port}>\r\n"
            f"{extra}Content-Length: 0\r\n\r\n"
        ).encode()
        self.ruri = ruri
        self.peer.send(self._invite, self.proxy)
        return self._final("INVITE", timeout) if wait else 0

    def _final(self, method: str, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            msg = self.peer.recv(max(left, 0.01)) if left > 0 else None
            if msg is None:
                raise AssertionError(f"no final answer to {method} within {timeout}s")
            status = status_of(msg)
            if status is None:
                self._answer(msg)
                continue
            cseq = header(msg, "CSeq") or ""
            if not cseq.endswith(method) or status < 200:
                continue
            if method == "INVITE" and self.remote:
                if status < 300:
                    self.ack()  # a re-INVITE: the dialog's route set stays
            elif method == "INVITE":
                self.to = header(msg, "To") or ""
                if status < 300:
                    self.route = list(reversed(_headers(msg, "Record-Route")))
                    self.remote = _uri_of(header(msg, "Contact") or "")
                    self.ack()
                else:
                    self._ack_failure()
            return status

    def _ack_failure(self) -> None:
        self.peer.send(
            (
                f"ACK {self.ruri} SIP/2.0\r\nVia: {self._via(self.branch)}\r\nMax-Forwards: 70\r\n"
                f"From: {self._from()}\r\nTo: {self.to}\r\nCall-ID: {self.call_id}\r\n"
                f"CSeq: {self.cseq} ACK\r\nContent-Length: 0\r\n\r\n"
            ).encode(),
            self.proxy,
        )

    def _in_dialog(self, method: str, cseq: int) -> bytes:
        routes = "".join(f"Route: {r}\r\n" for r in self.route)
        branch = "z9hG4bK" + uuid.uuid4().hex[:12]
        return (
            f"{method} {self.remote} SIP/2.0\r\nVia: {self._via(branch)}\r\nMax-Forwards: 70\r\n"
            f"{routes}From: {self._from()}\r\nTo: {self.to}\r\nCall-ID: {self.call_id}\r\n"
            f"CSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
        ).encode()

    def ack(self) -> None:
        self.peer.send(self._in_dialog("ACK", self.cseq), self.proxy)

    def request(self, method: str, timeout: float = 5.0) -> int:
        """Sends an in-dialog request (BYE, UPDATE, ...) and returns its final status."""
        self.cseq += 1
        self.peer.send(self._in_dialog(method, self.cseq), self.proxy)
        return self._final(method, timeout)

    def bye(self, timeout: float = 5.0) -> int:
        return self.request("BYE", timeout)

    def cancel(self, timeout: float = 5.0) -> int:
        """CANCELs the pending INVITE; returns the INVITE's final status."""
        lines = self._invite.split(b"\r\n")
        keep = [
            ln for ln in lines[1:] if ln.split(b":", 1)[0] in (b"Via", b"From", b"To", b"Call-ID")
        ]
        cancel = (
            f"CANCEL {self.ruri} SIP/2.0\r\n".encode()
            + b"\r\n".join(keep)
            + f"\r\nCSeq: {self.cseq} CANCEL\r\nMax-Forwards: 70\r\n".encode()
            + b"Content-Length: 0\r\n\r\n"
        )
        self.peer.send(cancel, self.proxy)
        return self._final("INVITE", timeout)

    def wait_provisional(self, status: int, timeout: float = 5.0) -> bytes:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.peer.recv(max(0.01, deadline - time.monotonic()))
            if msg is not None and status_of(msg) == status:
                return msg
        raise AssertionError(f"no {status} within {timeout}s")

    def _answer(self, req: bytes) -> None:
        """Answers a request from sipr with 200 (its Via, From, To, Call-ID, CSeq)."""
        self.received.append(req)
        head = req.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")[1:]
        keep = [
            ln
            for ln in head
            if ln.split(":", 1)[0].strip().lower() in ("via", "from", "to", "call-id", "cseq")
        ]
        self.peer.send(
            ("SIP/2.0 200 OK\r\n" + "\r\n".join(keep) + "\r\nContent-Length: 0\r\n\r\n").encode(),
            self.proxy,
        )

    def expect(self, method: str, timeout: float) -> bytes:
        """Waits for a request `method` from sipr (answering every request 200)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                seen = [_first_line(m) for m in self.received]
                raise AssertionError(f"no {method} from sipr within {timeout}s (got {seen})")
            msg = self.peer.recv(left)
            if msg is None or status_of(msg) is not None:
                continue
            self._answer(msg)
            if _first_line(msg).startswith(method + " "):
                return msg

    def close(self) -> None:
        self.peer.close()


def sipp_trace(workdir: Path) -> dict[tuple[str, str], float]:
    """Per (Call-ID, event), the wall-clock time SIPp logged the first such
    message in its trace (`-trace_msg`): an event is "sent ACK",
    "received 200 INVITE" (a response: status and CSeq method)."""
    times: dict[tuple[str, str], float] = {}
    for log in workdir.glob("*_messages.log"):
        for block in log.read_text(errors="replace").split("-" * 47 + " ")[1:]:
            stamp, _, rest = block.partition("\n")
            direction = "sent" if rest.startswith("UDP message sent") else "received"
            body = rest.split("\n\n", 1)[-1]
            first = body.split("\r\n", 1)[0].split("\n", 1)[0]
            fields = {}
            for ln in body.splitlines():
                name, sep, value = ln.partition(":")
                if sep and name in ("Call-ID", "CSeq"):
                    fields[name] = value.strip()
            call_id = fields.get("Call-ID", "")
            if not call_id:
                continue
            if first.startswith("SIP/2.0 "):
                what = f"{first.split()[1]} {fields.get('CSeq', ' ').split()[-1]}"
            else:
                what = first.split(" ", 1)[0]
            t = datetime.strptime(stamp.strip(), "%Y-%m-%d %H:%M:%S.%f").timestamp()
            times.setdefault((call_id, f"{direction} {what}"), t)
    return times


def sipp_pauses(workdir: Path) -> dict[str, float]:
    """Per Call-ID, the seconds from the ACK a SIPp UAC sent to its BYE, read
    from its message trace: the pause SIPp actually made."""
    sent = sipp_trace(workdir)
    return {
        cid: sent[(cid, "sent BYE")] - t
        for (cid, event), t in sent.items()
        if event == "sent ACK" and (cid, "sent BYE") in sent
    }


# -- the accounting database ----------------------------------------------------


def sqlite_rows(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return db.execute(sql, args).fetchall()
    except sqlite3.OperationalError:
        return []  # the writer has not created the tables yet
    finally:
        db.close()


# -- a private PostgreSQL cluster ---------------------------------------------

PG_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass
class Postgres:
    data: Path
    port: int
    sock_dir: Path
    as_user: list[str]

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            [*self.as_user, str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-t", "30", *args],
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.sock_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._ctl("-o", opts, "-l", str(self.data / "log"), "start")

    def stop(self) -> None:
        self._ctl("-m", "fast", "stop")

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        out = subprocess.run(
            [
                str(PG_BIN.parent / "bin" / "psql"),
                "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres",
                "-At", "-F", "\t", "-c", sql,
            ],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if out.returncode != 0:
            return []
        return [tuple(line.split("\t")) for line in out.stdout.splitlines() if line]


@contextmanager
def postgres_cluster() -> Iterator[Postgres]:
    """initdb + pg_ctl in a temporary directory on a free port (as the
    `postgres` user when running as root: PostgreSQL refuses root)."""
    if not (PG_BIN / "initdb").exists():
        raise RuntimeError("PostgreSQL 15 is not installed: apt-get install -y postgresql")
    base = Path(tempfile.mkdtemp(prefix="sipr-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(sock, "postgres")
        os.chmod(base, 0o755)
        as_user = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*as_user, str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
        check=True,
        capture_output=True,
    )
    pg = Postgres(data, free_port(), sock, as_user)
    pg.start()
    try:
        yield pg
    finally:
        try:
            pg.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(base, ignore_errors=True)
