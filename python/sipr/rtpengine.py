"""`sipr.rtpengine` (Kamailio `rtpengine`): a client of rtpengine's "ng"
control protocol, so calls' media goes through an RTP relay.

    rtp = sipr.rtpengine.RtpEngine(["udp:127.0.0.1:2223", "udp:10.0.0.9:2223=2"], app=app)
    app.on_reply(rtp.on_reply)          # answer in 183/200, delete on failure and BYE's 200

    @app.route
    async def route(req):
        await rtp.offer(req)            # the INVITE's SDP now points at rtpengine
        await req.relay(...)

Several instances make one set (Kamailio `rtpengine_sock` with weights): a
call sticks to the instance its offer went to (hash of the Call-ID over
the weights); an instance that does not answer a command in time (after
retransmissions) is disabled, the command moves on to the next, and a
background ping re-enables it when it answers again. With none left the
call gets `RtpEngineError` (turn it into 503 or 488). Several sets are
several `RtpEngine` objects. Operator page: docs/rtpengine.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
import weakref
from collections import OrderedDict
from typing import Any, ClassVar

from sipr._core import RelayReply, Request, SiprError
from sipr.bencode import decode, encode

log = logging.getLogger("sipr.rtpengine")

#: Calls remembered for stickiness (offer → answer → delete) per set.
MAX_CALLS = 100_000
#: ng flags given as plain words (Kamailio's flag strings) that go to "flags".
_FLAG_WORDS = {
    "trust-address",
    "symmetric",
    "asymmetric",
    "SIP-source-address",
    "strict-source",
    "media-handover",
    "port-latching",
    "record-call",
    "loop-protect",
    "all",
    "strip-extmap",
    "no-rtcp-attribute",
    "full-rtcp-attribute",
    "generate-mid",
    "original-sendrecv",
}


class RtpEngineError(SiprError):
    """No rtpengine instance answered, or the one asked refused the command."""


class Instance:
    """One rtpengine control socket of a set."""

    def __init__(self, spec: str | tuple[str, int]) -> None:
        if isinstance(spec, tuple):
            text, weight = spec
        else:
            text, _, w = spec.partition("=")
            weight = int(w) if w else 1
        self.spec = text
        host, port = _parse_address(text)
        self.addr = (host, port)
        if weight < 0:
            raise ValueError(f"rtpengine {spec!r}: weight must be >= 0")
        self.weight = weight
        self.enabled = True
        self.disabled_at: float | None = None
        #: Why it is disabled: "timeout" (found dead) or "admin" (`set_state`).
        self.reason = ""
        self.commands = 0
        self.timeouts = 0
        self.errors = 0

    def row(self) -> dict[str, Any]:
        return {
            "url": f"udp:{self.addr[0]}:{self.addr[1]}",
            "weight": self.weight,
            "state": "enabled" if self.enabled else "disabled",
            "reason": self.reason,
            "commands": self.commands,
            "timeouts": self.timeouts,
            "errors": self.errors,
        }


def _parse_address(text: str) -> tuple[str, int]:
    rest = text.removeprefix("udp:")
    if rest.startswith(("udp6:", "tcp:")):
        raise ValueError(f"rtpengine {text!r}: only udp: (IPv4 or [IPv6]) control sockets")
    if rest.startswith("["):
        host, _, port = rest[1:].partition("]:")
    else:
        host, _, port = rest.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"rtpengine {text!r}: expected udp:HOST:PORT[=WEIGHT]")
    return host, int(port)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, owner: RtpEngine) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: Any) -> None:
        cookie, _, payload = data.partition(b" ")
        fut = self.owner._waiting.get(cookie)
        if fut is not None and not fut.done():
            fut.set_result(payload)

    def error_received(self, exc: Exception) -> None:  # ICMP port unreachable
        pass


class RtpEngine:
    """One set of rtpengine instances (see the module docs)."""

    instances: ClassVar[weakref.WeakSet[RtpEngine]] = weakref.WeakSet()

    def __init__(
        self,
        instances: list[str | tuple[str, int]] | str,
        *,
        app: Any = None,
        name: str = "default",
        timeout: float = 1.0,
        retries: int = 2,
        recheck: float = 10.0,
        flags: str = "replace-origin replace-session-connection",
    ) -> None:
        """`instances`: `udp:HOST:PORT[=WEIGHT]` strings (or (address,
        weight) pairs). A command is sent, then re-sent `retries` times,
        `timeout` seconds apart; unanswered, the instance is disabled and
        pinged every `recheck` seconds until it answers. `flags`: the
        default Kamailio-style flags of offers and answers. With `app`, the
        control commands `rtpengine.show`, `rtpengine.enable` and
        `rtpengine.ping` are added."""
        specs = [instances] if isinstance(instances, str) else list(instances)
        if not specs:
            raise ValueError("RtpEngine needs at least one instance")
        if timeout <= 0 or retries < 0 or recheck <= 0:
            raise ValueError("timeout and recheck must be positive, retries >= 0")
        self.nodes = [Instance(s) for s in specs]
        self.name = name
        self.timeout = timeout
        self.retries = retries
        self.recheck = recheck
        self.flags = flags
        self._calls: OrderedDict[str, Instance] = OrderedDict()
        self._waiting: dict[bytes, asyncio.Future[bytes]] = {}
        self._transports: dict[int, asyncio.DatagramTransport] = {}
        self._pinger: asyncio.Task[None] | None = None
        self.offers = 0
        self.answers = 0
        self.deletes = 0
        self.failed = 0
        RtpEngine.instances.add(self)
        if app is not None:
            for rpc, fn in (
                ("rtpengine.show", self._rpc_show),
                ("rtpengine.enable", self._rpc_enable),
                ("rtpengine.ping", self._rpc_ping),
            ):
                if rpc not in app.rpc_methods:
                    app.rpc(rpc)(fn)

    # -- the route's calls ---------------------------------------------------

    async def offer(self, msg: Request | RelayReply, flags: str | None = None) -> bool:
        """Sends the SDP offer of `msg` (an INVITE, or a 200 with a late
        offer) through rtpengine and puts rtpengine's SDP in its place.
        False (nothing done) when `msg` carries no SDP."""
        if not _has_sdp(msg):
            return False
        params = self._params(msg, "offer", flags)
        reply = await self._command(params, msg.call_id)
        msg.body = reply["sdp"]
        self.offers += 1
        return True

    async def answer(self, msg: Request | RelayReply, flags: str | None = None) -> bool:
        """The SDP answer of `msg` (a 183/200, or the ACK of a late offer)."""
        if not _has_sdp(msg):
            return False
        params = self._params(msg, "answer", flags)
        reply = await self._command(params, msg.call_id)
        msg.body = reply["sdp"]
        self.answers += 1
        return True

    async def delete(self, msg: Request | RelayReply) -> bool:
        """Ends the call's media session (BYE, CANCEL, a failed INVITE).
        False when rtpengine did not know the call."""
        call_id = msg.call_id
        params: dict[str, Any] = {"command": "delete", "call-id": call_id}
        tag = _from_tag(msg)
        if tag:
            params["from-tag"] = tag
        try:
            await self._command(params, call_id)
        except RtpEngineError as e:
            if "Unknown call" in str(e):
                return False
            raise
        finally:
            self._calls.pop(call_id, None)
        self.deletes += 1
        return True

    async def manage(self, msg: Request | RelayReply) -> None:
        """Kamailio's `rtpengine_manage()`: offer, answer or delete,
        whichever `msg` calls for (INVITE / ACK / 18x-2xx / failure / BYE,
        CANCEL)."""
        method = msg.method if isinstance(msg, Request) else msg.cseq.method
        if isinstance(msg, Request):
            if method in ("BYE", "CANCEL"):
                await self.delete(msg)
            elif method == "INVITE":
                await self.offer(msg)
            elif method == "ACK" and _has_sdp(msg):
                await self.answer(msg)
            return
        status = msg.status
        if method == "BYE" and status >= 200:
            await self.delete(msg)
        elif method == "INVITE" and status >= 300:
            await self.delete(msg)
        elif method == "INVITE" and status > 100 and _has_sdp(msg):
            if msg.call_id in self._calls:
                await self.answer(msg)
            else:  # the INVITE had no SDP: the 200 is the offer (late offer)
                await self.offer(msg)

    async def on_reply(self, reply: RelayReply) -> None:
        """An `on_reply` handler doing `manage` on every response; an
        rtpengine failure is logged and the response goes on unchanged."""
        try:
            await self.manage(reply)
        except RtpEngineError as e:
            log.warning("rtpengine: %s (Call-ID %s)", e, reply.call_id)

    async def ping(self, node: Instance | None = None) -> bool:
        """Pings one instance (or the first enabled one); True if it answered."""
        target = node or next((n for n in self.nodes if n.enabled), None)
        if target is None:
            return False
        try:
            reply = await self._send(target, {"command": "ping"})
        except (TimeoutError, OSError):
            return False
        return reply.get("result") == "pong"

    async def query(self, call_id: str) -> dict[str, Any]:
        """rtpengine's view of a call (streams, packet counters)."""
        return await self._command({"command": "query", "call-id": call_id}, call_id)

    async def list_calls(self, node: Instance | None = None) -> list[str]:
        """The Call-IDs an instance has sessions for."""
        target = node or self.nodes[0]
        reply = await self._send(target, {"command": "list", "limit": 1000})
        return [c.decode() if isinstance(c, bytes) else c for c in reply.get("calls", [])]

    # -- selection, failover ---------------------------------------------------

    def _pick(self, call_id: str) -> list[Instance]:
        """The instances to try for a call: the one it is on, else a
        weighted hash of its Call-ID, then the others."""
        known = self._calls.get(call_id)
        enabled = [n for n in self.nodes if n.enabled and n.weight > 0]
        order: list[Instance] = []
        if known is not None and known.enabled:
            order.append(known)
        if enabled:
            total = sum(n.weight for n in enabled)
            h = int.from_bytes(hashlib.blake2b(call_id.encode(), digest_size=8).digest(), "big")
            point = h % total
            for i, n in enumerate(enabled):
                if point < n.weight:
                    order += enabled[i:] + enabled[:i]
                    break
                point -= n.weight
        unique: list[Instance] = []
        for n in order:
            if all(n is not u for u in unique):
                unique.append(n)
        return unique

    async def _command(self, params: dict[str, Any], call_id: str) -> dict[str, Any]:
        candidates = self._pick(call_id)
        if not candidates:
            self.failed += 1
            raise RtpEngineError(f"rtpengine set {self.name!r}: no instance enabled")
        sticky = params["command"] in ("answer", "delete", "query") and call_id in self._calls
        for node in candidates:
            try:
                reply = await self._send(node, params)
            except (TimeoutError, OSError) as e:
                node.timeouts += 1
                self._disable(node, "timeout", e)
                if sticky:
                    # The session lived on the dead instance: no other has it.
                    break
                continue
            result = reply.get("result")
            if result != "ok":
                node.errors += 1
                self.failed += 1
                why = reply.get("error-reason", result)
                raise RtpEngineError(f"rtpengine {node.spec}: {params['command']} failed: {why}")
            if params["command"] in ("offer", "answer"):
                self._remember(call_id, node)
            return reply
        self.failed += 1
        raise RtpEngineError(
            f"rtpengine set {self.name!r}: no instance answered {params['command']}"
        )

    def _remember(self, call_id: str, node: Instance) -> None:
        self._calls[call_id] = node
        self._calls.move_to_end(call_id)
        while len(self._calls) > MAX_CALLS:
            self._calls.popitem(last=False)

    def _disable(self, node: Instance, reason: str, exc: object = None) -> None:
        if node.enabled:
            log.warning(
                "rtpengine %s disabled (%s%s)", node.spec, reason, f": {exc}" if exc else ""
            )
        node.enabled = False
        node.reason = reason
        node.disabled_at = time.monotonic()
        if reason == "timeout" and (self._pinger is None or self._pinger.done()):
            self._pinger = asyncio.get_running_loop().create_task(self._recheck())

    async def _recheck(self) -> None:
        """Pings the instances found dead until each answers again."""
        while any(not n.enabled and n.reason == "timeout" for n in self.nodes):
            await asyncio.sleep(self.recheck)
            for node in self.nodes:
                if not node.enabled and node.reason == "timeout" and await self.ping(node):
                    node.enabled = True
                    node.reason = ""
                    node.disabled_at = None
                    log.warning("rtpengine %s answers again: enabled", node.spec)

    async def _send(self, node: Instance, params: dict[str, Any]) -> dict[str, Any]:
        """One command with retransmissions (the same cookie: rtpengine
        answers a repeat from its cache). TimeoutError when unanswered."""
        transport = await self._transport(node)
        cookie = os.urandom(8).hex().encode()
        data = cookie + b" " + encode(params)
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[cookie] = fut
        node.commands += 1
        try:
            for _ in range(self.retries + 1):
                transport.sendto(data, node.addr)
                try:
                    payload = await asyncio.wait_for(asyncio.shield(fut), self.timeout)
                except TimeoutError:
                    continue
                reply = decode(payload)
                if not isinstance(reply, dict):
                    raise RtpEngineError(f"rtpengine {node.spec}: malformed answer")
                return {k.decode(): _text(v) for k, v in reply.items()}
            raise TimeoutError(
                f"no answer from {node.spec} in {self.timeout * (self.retries + 1)} s"
            )
        finally:
            self._waiting.pop(cookie, None)
            fut.cancel()

    async def _transport(self, node: Instance) -> asyncio.DatagramTransport:
        family = 6 if ":" in node.addr[0] else 4
        t = self._transports.get(family)
        if t is None or t.is_closing():
            loop = asyncio.get_running_loop()
            local = ("::1", 0) if family == 6 else ("0.0.0.0", 0)
            if node.addr[0] in ("127.0.0.1", "::1"):
                local = (node.addr[0], 0)
            t, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), local_addr=local)
            self._transports[family] = t
        return t

    def _params(self, msg: Request | RelayReply, command: str, flags: str | None) -> dict[str, Any]:
        """The ng dictionary of an offer / answer: the SDP, Call-ID and the
        tags in the order rtpengine wants (the offerer's as from-tag: for a
        late offer in a 200 and its answer in the ACK, the tags swap)."""
        params: dict[str, Any] = {"command": command, "call-id": msg.call_id, "sdp": msg.body}
        from_tag, to_tag = _from_tag(msg), _to_tag(msg)
        is_request = isinstance(msg, Request)
        swap = (command == "offer") != is_request
        if swap:
            from_tag, to_tag = to_tag, from_tag
        if from_tag:
            params["from-tag"] = from_tag
        if to_tag:
            params["to-tag"] = to_tag
        if isinstance(msg, Request):
            host = msg.source.host
            params["received-from"] = ["IP6" if ":" in host else "IP4", host]
        _apply_flags(params, flags if flags is not None else self.flags)
        return params

    # -- control ---------------------------------------------------------------

    def set_state(self, url: str, enabled: bool) -> int:
        """Enables or disables (by an operator) the instances at `url`."""
        host, port = _parse_address(url)
        n = 0
        for node in self.nodes:
            if node.addr == (host, port):
                node.enabled = enabled
                node.reason = "" if enabled else "admin"
                n += 1
        return n

    def show(self) -> list[dict[str, Any]]:
        return [{"set": self.name, **n.row()} for n in self.nodes]

    def stats(self) -> dict[str, float]:
        p = f"rtpengine.{self.name}"
        out: dict[str, float] = {
            f"{p}.offers": self.offers,
            f"{p}.answers": self.answers,
            f"{p}.deletes": self.deletes,
            f"{p}.errors": self.failed,
            f"{p}.calls": len(self._calls),
        }
        for n in self.nodes:
            out[f"rtpengine.up.{self.name}/{n.spec}"] = 1 if n.enabled else 0
        return out

    async def _rpc_show(self, *_: Any) -> list[dict[str, Any]]:
        return [row for r in list(RtpEngine.instances) for row in r.show()]

    async def _rpc_enable(self, url: str, state: Any = 1, *_: Any) -> dict[str, int]:
        on = str(state).lower() not in ("0", "false", "off", "no")
        return {"changed": sum(r.set_state(url, on) for r in list(RtpEngine.instances))}

    async def _rpc_ping(self, *_: Any) -> list[dict[str, Any]]:
        rows = []
        for r in list(RtpEngine.instances):
            for node in r.nodes:
                rows.append({"set": r.name, "url": node.row()["url"], "pong": await r.ping(node)})
        return rows


def stats() -> dict[str, float]:
    """Every rtpengine set's statistics (for `stats.get` and `/metrics`)."""
    out: dict[str, float] = {}
    for r in list(RtpEngine.instances):
        out.update(r.stats())
    return out


def _apply_flags(params: dict[str, Any], flags: str) -> None:
    """Kamailio-style flag words into the ng dictionary: `replace-origin`
    → replace: [origin], `ICE=remove` → ICE: remove, `RTP/AVP` →
    transport-protocol, `direction=a` (repeatable), plain flags → flags."""
    for word in flags.split():
        key, eq, value = word.partition("=")
        if word.startswith("replace-"):
            params.setdefault("replace", []).append(word.removeprefix("replace-"))
        elif word.startswith(("RTP/", "UDP/TLS/")):
            params["transport-protocol"] = word
        elif key == "direction" and eq:
            params.setdefault("direction", []).append(value)
        elif eq:
            params[key] = value
        elif word in _FLAG_WORDS:
            params.setdefault("flags", []).append(word)
        else:
            raise ValueError(f"rtpengine: unknown flag {word!r}")


def _has_sdp(msg: Request | RelayReply) -> bool:
    ctype = (msg.headers.get("Content-Type") or "").lower()
    return bool(msg.body) and ctype.startswith("application/sdp")


def _from_tag(msg: Request | RelayReply) -> str | None:
    return msg.from_.tag if isinstance(msg, Request) else msg.from_tag


def _to_tag(msg: Request | RelayReply) -> str | None:
    return msg.to.tag if isinstance(msg, Request) else msg.to_tag


def _text(v: Any) -> Any:
    """ng answers are bytes throughout; keys and short values become str
    where the client reads them (`result`, `error-reason`), SDP stays bytes."""
    if isinstance(v, bytes):
        try:
            s = v.decode()
        except UnicodeDecodeError:
            return v
        return v if s.startswith("v=0") else s
    if isinstance(v, list):
        return [_text(x) for x in v]
    if isinstance(v, dict):
        return {(k.decode() if isinstance(k, bytes) else k): _text(x) for k, x in v.items()}
    return v
