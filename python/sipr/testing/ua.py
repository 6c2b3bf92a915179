"""Small SIP user agents for tests: they register (with digest), call,
answer, cancel and send in-dialog requests through the system under test,
and keep every message the core sent them for the test to assert on.

They run on the test's event loop, over real sockets on 127.0.0.1. They do
not retransmit (loopback does not lose datagrams) but absorb the core's
retransmissions as RFC 3261 §17 says."""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, Protocol, TypeVar

from sipr.testing import digest
from sipr.testing.message import Message, new_branch, new_token, tag_of, uri_of
from sipr.testing.transport import Endpoint, Peer


class Served(Protocol):
    """What a UA needs of the system under test (`sipr.testing.SUT`)."""

    domain: str

    def address(self, transport: str = "udp") -> tuple[str, int]: ...
    def uri(self, user: str | None = None, transport: str = "udp") -> str: ...


log = logging.getLogger("sipr.testing")
T = TypeVar("T")

HeadersArg = Mapping[str, str] | Iterable[tuple[str, str]] | None
_HOSTPORT = re.compile(r"sips?:(?:[^@;>]*@)?(\[[^\]]+\]|[^;:>?]+)(?::(\d+))?")


def address_of(uri: str, default_port: int = 5060) -> tuple[str, int]:
    """(host, port) a SIP URI names (no DNS: tests use IP literals)."""
    m = _HOSTPORT.match(uri_of(uri))
    if m is None:
        raise ValueError(f"not a SIP URI with a host: {uri!r}")
    return m.group(1).strip("[]"), int(m.group(2) or default_port)


def _header_list(headers: HeadersArg) -> list[tuple[str, str]]:
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(str(k), str(v)) for k, v in items]


class _Waitable:
    """Something whose state a test awaits: `_changed()` wakes the waiters."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._event = asyncio.Event()

    def _changed(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def _wait_for(self, ready: Callable[[], T | None], what: str, timeout: float | None) -> T:
        try:
            async with asyncio.timeout(self.timeout if timeout is None else timeout):
                while True:
                    found = ready()
                    if found is not None and found is not False:
                        return found
                    await self._event.wait()
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}") from None


class ClientTransaction(_Waitable):
    """A request this UA sent (and re-sent with credentials when challenged)
    and the responses that came back."""

    def __init__(self, ua: UA, request: Message, dest: tuple[str, int], *, auth: bool) -> None:
        super().__init__(ua.timeout)
        self.ua = ua
        self.request = request
        self.dest = dest
        self.responses: list[Message] = []
        self.final_response: Message | None = None
        self.auth_left = 1 if auth and ua.password is not None else 0
        #: Dialogs a 2xx to this INVITE created (one per To tag).
        self.dialogs: dict[str, Dialog] = {}

    async def final(self, timeout: float | None = None) -> Message:
        """The final response (after a digest retry, if one was needed)."""
        return await self._wait_for(
            lambda: self.final_response, f"a final response to {self.request.method}", timeout
        )

    async def response(self, status: int, timeout: float | None = None) -> Message:
        """The first response with `status` (e.g. 180)."""
        return await self._wait_for(
            lambda: next((r for r in self.responses if r.status == status), None),
            f"a {status} to {self.request.method}",
            timeout,
        )

    async def provisional(self, timeout: float | None = None) -> Message:
        """The first 1xx above 100 (ringing, session progress)."""
        return await self._wait_for(
            lambda: next((r for r in self.responses if 100 < (r.status or 0) < 200), None),
            f"a provisional response to {self.request.method}",
            timeout,
        )


class Dialog:
    """One side of a dialog: builds and sends in-dialog requests."""

    def __init__(
        self,
        ua: UA,
        *,
        call_id: str,
        local_tag: str,
        remote_tag: str,
        local_uri: str,
        remote_uri: str,
        remote_target: str,
        route_set: list[str],
        local_cseq: int,
    ) -> None:
        self.ua = ua
        self.call_id = call_id
        self.local_tag = local_tag
        self.remote_tag = remote_tag
        self.local_uri = local_uri
        self.remote_uri = remote_uri
        self.remote_target = remote_target
        self.route_set = route_set
        self.local_cseq = local_cseq
        self.ended = False

    @property
    def next_hop(self) -> tuple[str, int]:
        return address_of(self.route_set[0] if self.route_set else self.remote_target)

    def build(
        self, method: str, *, cseq: int | None = None, headers: HeadersArg = None, body: bytes = b""
    ) -> Message:
        if cseq is None:
            self.local_cseq += 1
            cseq = self.local_cseq
        lines = [
            ("Via", self.ua.via(new_branch())),
            ("Max-Forwards", "70"),
            ("From", f"<{self.local_uri}>;tag={self.local_tag}"),
            ("To", f"<{self.remote_uri}>;tag={self.remote_tag}"),
            ("Call-ID", self.call_id),
            ("CSeq", f"{cseq} {method}"),
        ]
        lines += [("Route", r) for r in self.route_set]
        if method in ("INVITE", "UPDATE", "SUBSCRIBE", "REFER"):
            lines.append(("Contact", f"<{self.ua.contact}>"))
        lines += _header_list(headers)
        return Message(f"{method} {self.remote_target} SIP/2.0", lines, body)

    async def request(
        self, method: str, *, headers: HeadersArg = None, body: bytes = b""
    ) -> ClientTransaction:
        """Sends an in-dialog request (BYE, INFO, re-INVITE...) along the
        route set; await `.final()` on what it returns."""
        msg = self.build(method, headers=headers, body=body)
        if method == "BYE":
            self.ended = True
        return await self.ua._start_transaction(msg, self.next_hop, auth=True, dialog=self)

    async def bye(self) -> Message:
        """Ends the dialog; returns the BYE's final response."""
        return await (await self.request("BYE")).final()


class Call:
    """An INVITE this UA sent: its responses, the dialog its 2xx made."""

    def __init__(self, txn: ClientTransaction) -> None:
        self.txn = txn

    @property
    def invite(self) -> Message:
        """The INVITE as last sent (with credentials after a challenge)."""
        return self.txn.request

    @property
    def responses(self) -> list[Message]:
        return self.txn.responses

    @property
    def dialog(self) -> Dialog:
        if not self.txn.dialogs:
            raise AssertionError("no dialog: the call was not answered with a 2xx")
        return next(iter(self.txn.dialogs.values()))

    async def final(self, timeout: float | None = None) -> Message:
        return await self.txn.final(timeout)

    async def provisional(self, timeout: float | None = None) -> Message:
        return await self.txn.provisional(timeout)

    async def response(self, status: int, timeout: float | None = None) -> Message:
        return await self.txn.response(status, timeout)

    async def cancel(self) -> Message:
        """CANCELs the INVITE (RFC 3261 §9.1); returns the CANCEL's own
        response. The INVITE's final (487) follows: `await call.final()`."""
        inv = self.txn.request
        lines = [
            (k, v)
            for k, v in inv.headers
            if k.lower() in ("via", "v", "from", "f", "to", "t", "call-id", "i", "route")
        ]
        lines += [("Max-Forwards", "70"), ("CSeq", f"{inv.cseq[0]} CANCEL")]
        msg = Message(f"CANCEL {inv.uri} SIP/2.0", lines)
        txn = await self.txn.ua._start_transaction(msg, self.txn.dest, auth=False)
        return await txn.final()

    async def bye(self) -> Message:
        return await self.dialog.bye()

    async def request(
        self, method: str, *, headers: HeadersArg = None, body: bytes = b""
    ) -> Message:
        return await (await self.dialog.request(method, headers=headers, body=body)).final()

    async def reinvite(self, body: bytes = b"", *, headers: HeadersArg = None) -> Message:
        """A re-INVITE in the dialog (its 2xx is ACKed); its final response."""
        return await self.request("INVITE", headers=headers, body=body)


class Incoming(_Waitable):
    """A request that reached this UA (a server transaction): answer it."""

    def __init__(self, ua: UA, request: Message) -> None:
        super().__init__(ua.timeout)
        self.ua = ua
        self.request = request
        self.sent: list[Message] = []
        self.to_tag = request.to_tag or new_token("t")
        self.acked: Message | None = None
        self.cancelled = False
        self.dialog: Dialog | None = None

    @property
    def final_sent(self) -> Message | None:
        return next((m for m in reversed(self.sent) if (m.status or 0) >= 200), None)

    def build(
        self,
        status: int,
        reason: str | None = None,
        *,
        headers: HeadersArg = None,
        body: bytes = b"",
    ) -> Message:
        req = self.request
        lines: list[tuple[str, str]] = []
        for name, value in req.headers:
            low = name.lower()
            if low in ("via", "v", "from", "f", "call-id", "i", "cseq"):
                lines.append((name, value))
            elif low in ("to", "t"):
                tagged = status > 100 and tag_of(value) is None
                lines.append((name, f"{value};tag={self.to_tag}" if tagged else value))
            elif low == "record-route" and req.method == "INVITE" and 100 < status < 300:
                lines.append((name, value))
        if req.method == "INVITE" and 100 < status < 300:
            lines.append(("Contact", f"<{self.ua.contact}>"))
        lines += _header_list(headers)
        return Message(f"SIP/2.0 {status} {reason or REASONS.get(status, 'Unknown')}", lines, body)

    async def reply(
        self,
        status: int,
        reason: str | None = None,
        *,
        headers: HeadersArg = None,
        body: bytes = b"",
    ) -> Message:
        """Sends a response back the way the request came."""
        resp = self.build(status, reason, headers=headers, body=body)
        self.sent.append(resp)
        if self.request.method == "INVITE" and 200 <= status < 300 and self.dialog is None:
            self.dialog = self.ua._uas_dialog(self)
        assert self.request.peer is not None
        await self.ua._send(resp, self.request.peer)
        self._changed()
        return resp

    async def ring(self) -> Message:
        return await self.reply(180)

    async def answer(self, status: int = 200, *, body: bytes = b"") -> Message:
        return await self.reply(status, body=body)

    async def reject(self, status: int = 486) -> Message:
        return await self.reply(status)

    async def ack(self, timeout: float | None = None) -> Message:
        """The ACK for this INVITE's final response, once it arrived."""
        return await self._wait_for(lambda: self.acked, "the ACK", timeout)

    async def wait_cancelled(self, timeout: float | None = None) -> None:
        await self._wait_for(lambda: self.cancelled, "a CANCEL", timeout)

    async def bye(self) -> Message:
        """The callee hangs up."""
        if self.dialog is None:
            raise AssertionError("no dialog: this request was not answered with a 2xx")
        return await self.dialog.bye()


class UA(_Waitable):
    """A SIP user agent `name@domain` on its own socket (one transport).

    `answer`: how it answers an incoming INVITE by itself (180 then this
    status; None: the test answers, `await ua.next_request("INVITE")`).
    `reply`: the status it answers other requests with (None: the test).
    """

    def __init__(
        self,
        sut: Served,
        name: str,
        *,
        transport: str = "udp",
        password: str | None = None,
        domain: str | None = None,
        answer: int | None = 200,
        reply: int | None = 200,
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
        timeout: float = 5.0,
    ) -> None:
        super().__init__(timeout)
        self.sut = sut
        self.name = name
        self.password = password
        self.domain = domain or sut.domain
        self.auto_answer = answer
        self.auto_reply = reply
        self.endpoint = Endpoint(
            transport, self._on_message, server_ssl=server_ssl, client_ssl=client_ssl
        )
        self.transport = transport
        self.proxy = sut.address(transport)
        #: Every message that reached this UA, in order.
        self.received: list[Message] = []
        #: Requests not yet taken with `next_request`.
        self.inbox: list[Incoming] = []
        self._clients: dict[tuple[str, str], ClientTransaction] = {}
        self._servers: dict[tuple[str, str], Incoming] = {}
        self._acks: dict[tuple[str, str], Message] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reg_call_id = new_token("r")
        self._cseq = 0
        self._nonce_counts: dict[str, int] = {}
        self._started = self._spawn(self.endpoint.start())

    # -- addresses --------------------------------------------------------
    @property
    def port(self) -> int:
        return self.endpoint.port

    @property
    def contact(self) -> str:
        """This UA's own URI (where the core reaches it)."""
        suffix = "" if self.transport == "udp" else f";transport={self.transport}"
        return f"sip:{self.name}@127.0.0.1:{self.port}{suffix}"

    uri = contact

    @property
    def aor(self) -> str:
        return f"sip:{self.name}@{self.domain}"

    def via(self, branch: str) -> str:
        return f"SIP/2.0/{self.transport.upper()} 127.0.0.1:{self.port};branch={branch};rport"

    def target(self, who: str) -> str:
        """A Request-URI: `who` itself if it is a URI, else a user at the
        system under test."""
        if who.startswith(("sip:", "sips:", "tel:")):
            return who
        return self.sut.uri(who, self.transport)

    # -- sending ----------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("test UA %s: %r", self.name, task.exception())

    async def _send(self, msg: Message, to: tuple[str, int] | Peer) -> None:
        await self._started
        data = msg.to_bytes()
        msg.raw = data
        await self.endpoint.send(data, to)

    async def _start_transaction(
        self,
        msg: Message,
        dest: tuple[str, int],
        *,
        auth: bool,
        dialog: Dialog | None = None,
        txn: ClientTransaction | None = None,
    ) -> ClientTransaction:
        if txn is None:
            txn = ClientTransaction(self, msg, dest, auth=auth)
        txn.request = msg
        assert msg.branch is not None
        self._clients[(msg.branch, msg.method)] = txn
        await self._send(msg, dest)
        return txn

    def _new_request(
        self,
        method: str,
        ruri: str,
        *,
        to: str | None = None,
        call_id: str | None = None,
        headers: HeadersArg = None,
        body: bytes = b"",
    ) -> Message:
        self._cseq += 1
        lines = [
            ("Via", self.via(new_branch())),
            ("Max-Forwards", "70"),
            ("From", f"<{self.aor}>;tag={new_token('f')}"),
            ("To", f"<{to or ruri}>"),
            ("Call-ID", call_id or new_token("c")),
            ("CSeq", f"{self._cseq} {method}"),
        ]
        if method in ("INVITE", "REGISTER", "SUBSCRIBE", "REFER"):
            lines.append(("Contact", f"<{self.contact}>"))
        lines += _header_list(headers)
        if body and not any(k.lower() in ("content-type", "c") for k, _ in lines):
            lines.append(("Content-Type", "application/sdp"))
        return Message(f"{method} {ruri} SIP/2.0", lines, body)

    async def send(
        self,
        method: str,
        target: str,
        *,
        headers: HeadersArg = None,
        body: bytes = b"",
        auth: bool = True,
    ) -> ClientTransaction:
        """Sends a request outside any dialog through the system under test."""
        ruri = self.target(target)
        msg = self._new_request(method, ruri, headers=headers, body=body)
        return await self._start_transaction(msg, self.proxy, auth=auth)

    async def request(
        self,
        method: str,
        target: str,
        *,
        headers: HeadersArg = None,
        body: bytes = b"",
        auth: bool = True,
    ) -> Message:
        """`send` and await the final response."""
        txn = await self.send(method, target, headers=headers, body=body, auth=auth)
        return await txn.final()

    async def invite(
        self,
        target: str,
        *,
        headers: HeadersArg = None,
        body: bytes = b"",
        auth: bool = True,
    ) -> Call:
        """Calls `target` (a user at the system under test, or a URI);
        returns once the INVITE is sent."""
        return Call(await self.send("INVITE", target, headers=headers, body=body, auth=auth))

    async def register(
        self, expires: int = 3600, *, contact: str | None = None, headers: HeadersArg = None
    ) -> Message:
        """Registers this UA's contact for its AoR (answering a digest
        challenge when it has a password); the final response."""
        ruri = self.sut.uri(None, self.transport)
        extra = [("Expires", str(expires)), *_header_list(headers)]
        msg = self._new_request(
            "REGISTER", ruri, to=self.aor, call_id=self._reg_call_id, headers=extra
        )
        if contact is not None:
            msg.headers = [(k, contact if k == "Contact" else v) for k, v in msg.headers]
        txn = await self._start_transaction(msg, self.proxy, auth=True)
        return await txn.final()

    async def unregister(self) -> Message:
        return await self.register(0)

    # -- receiving --------------------------------------------------------
    async def next_request(
        self, method: str | None = None, timeout: float | None = None
    ) -> Incoming:
        """The next request that arrived (of `method`), taken from the inbox."""

        def take() -> Incoming | None:
            for i, inc in enumerate(self.inbox):
                if method is None or inc.request.method == method:
                    return self.inbox.pop(i)
            return None

        found: Incoming = await self._wait_for(
            take, f"{method or 'a request'} at {self.name}", timeout
        )
        return found

    def _on_message(self, msg: Message) -> None:
        self.received.append(msg)
        try:
            if msg.is_request:
                self._on_request(msg)
            else:
                self._on_response(msg)
        finally:
            self._changed()

    def _on_response(self, msg: Message) -> None:
        branch = msg.branch or ""
        txn = self._clients.get((branch, msg.method))
        if txn is None:
            return
        status = msg.status or 0
        if txn.final_response is not None or (status >= 200 and txn.request.branch != branch):
            if msg.method == "INVITE" and status >= 200:
                self._resend_ack(msg)  # a retransmitted final: ACK it again
            return
        txn.responses.append(msg)
        if status < 200:
            txn._changed()
            return
        if msg.method == "INVITE":
            self._ack(txn, msg)
        if status in (401, 407) and txn.auth_left > 0:
            txn.auth_left -= 1
            self._spawn(self._retry_with_credentials(txn, msg))
            return
        txn.final_response = msg
        txn._changed()

    def _ack(self, txn: ClientTransaction, resp: Message) -> None:
        inv = txn.request
        status = resp.status or 0
        if status >= 300:  # RFC 3261 §17.1.1.3: same branch, hop by hop
            lines = [
                (k, v)
                for k, v in inv.headers
                if k.lower() in ("via", "v", "from", "f", "call-id", "i", "route")
            ]
            lines += [("To", resp["To"]), ("CSeq", f"{inv.cseq[0]} ACK"), ("Max-Forwards", "70")]
            ack = Message(f"ACK {inv.uri} SIP/2.0", lines)
            dest: tuple[str, int] = txn.dest
        else:  # §13.2.2.4: end to end, along the dialog's route set
            remote_tag = resp.to_tag or ""
            dialog = txn.dialogs.get(remote_tag)
            if dialog is None:
                dialog = txn.dialogs[remote_tag] = self._uac_dialog(inv, resp)
            ack = dialog.build("ACK", cseq=inv.cseq[0])
            dest = dialog.next_hop
        self._acks[(resp.call_id, resp.to_tag or "")] = ack
        ack.peer = (self.transport, *dest)
        self._spawn(self._send(ack, dest))

    def _resend_ack(self, resp: Message) -> None:
        ack = self._acks.get((resp.call_id, resp.to_tag or ""))
        if ack is not None and ack.peer is not None:
            self._spawn(self._send(ack, ack.peer))

    def _uac_dialog(self, inv: Message, resp: Message) -> Dialog:
        return Dialog(
            self,
            call_id=inv.call_id,
            local_tag=inv.from_tag or "",
            remote_tag=resp.to_tag or "",
            local_uri=uri_of(inv["From"]),
            remote_uri=uri_of(inv["To"]),
            remote_target=resp.contact_uri or inv.uri,
            route_set=list(reversed(resp.header_all("Record-Route"))),
            local_cseq=inv.cseq[0],
        )

    def _uas_dialog(self, inc: Incoming) -> Dialog:
        req = inc.request
        return Dialog(
            self,
            call_id=req.call_id,
            local_tag=inc.to_tag,
            remote_tag=req.from_tag or "",
            local_uri=uri_of(req["To"]),
            remote_uri=uri_of(req["From"]),
            remote_target=req.contact_uri or uri_of(req["From"]),
            route_set=req.header_all("Record-Route"),
            local_cseq=1000,
        )

    async def _retry_with_credentials(self, txn: ClientTransaction, challenge: Message) -> None:
        assert self.password is not None
        header = "WWW-Authenticate" if challenge.status == 401 else "Proxy-Authenticate"
        answer = "Authorization" if challenge.status == 401 else "Proxy-Authorization"
        params = digest.pick(challenge.header_all(header))
        old = txn.request
        nonce = params["nonce"]
        self._nonce_counts[nonce] = count = self._nonce_counts.get(nonce, 0) + 1
        value = digest.authorization(params, old.method, old.uri, self.name, self.password, count)
        self._cseq += 1
        lines: list[tuple[str, str]] = []
        for k, v in old.headers:
            low = k.lower()
            if low in ("via", "v"):
                v = self.via(new_branch())
            elif low == "cseq":
                v = f"{self._cseq} {old.method}"
            elif low in ("authorization", "proxy-authorization"):
                continue
            lines.append((k, v))
        lines.append((answer, value))
        await self._start_transaction(
            Message(old.first_line, lines, old.body), txn.dest, auth=True, txn=txn
        )

    def _on_request(self, msg: Message) -> None:
        branch = msg.branch or ""
        if msg.method == "ACK":
            inc = self._servers.get((branch, "INVITE"))
            if inc is None:  # a 2xx ACK: its own branch, matched by dialog
                inc = next(
                    (
                        s
                        for s in self._servers.values()
                        if s.request.method == "INVITE"
                        and s.request.call_id == msg.call_id
                        and s.to_tag == msg.to_tag
                        and s.request.cseq[0] == msg.cseq[0]
                    ),
                    None,
                )
            if inc is not None:
                inc.acked = msg
                inc._changed()
            return
        if msg.method == "CANCEL":
            self._on_cancel(msg)
            return
        known = self._servers.get((branch, msg.method))
        if known is not None:  # a retransmission: the last answer again
            if known.sent:
                assert msg.peer is not None
                self._spawn(self._send(known.sent[-1], msg.peer))
            return
        inc = Incoming(self, msg)
        self._servers[(branch, msg.method)] = inc
        self.inbox.append(inc)
        if msg.method == "INVITE" and msg.to_tag is None:
            if self.auto_answer is not None:
                self._spawn(self._answer(inc, self.auto_answer))
        elif msg.method == "INVITE" and self.auto_reply is not None:
            self._spawn(inc.reply(self.auto_reply))  # a re-INVITE
        elif self.auto_reply is not None:
            self._spawn(inc.reply(self.auto_reply))

    async def _answer(self, inc: Incoming, status: int) -> None:
        if 200 <= status < 300:
            await inc.ring()
        if not inc.cancelled:
            await inc.reply(status)

    def _on_cancel(self, msg: Message) -> None:
        inc = self._servers.get((msg.branch or "", "INVITE"))
        cancel = Incoming(self, msg)
        self.inbox.append(cancel)
        self._spawn(cancel.reply(200 if inc is not None else 481))
        if inc is None:
            return
        inc.cancelled = True
        inc._changed()
        if inc.final_sent is None:
            self._spawn(inc.reply(487))

    async def close(self) -> None:
        for task in list(self._tasks):
            if task is not self._started:
                task.cancel()
        for task in list(self._tasks):
            try:
                await task
            except BaseException:
                pass
        await self.endpoint.close()


REASONS = {
    100: "Trying",
    180: "Ringing",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    486: "Busy Here",
    487: "Request Terminated",
    500: "Server Internal Error",
    503: "Service Unavailable",
    603: "Decline",
}
