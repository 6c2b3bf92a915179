"""Registrar and location service (RFC 3261 §10.3, Path RFC 3327, NAT
source addresses as Kamailio's `received`)."""

from __future__ import annotations

import email.utils
import ipaddress
import logging
import re
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from sipr._core import URI, Request
from sipr.store import Binding, MemoryStore, Store, open_store

if TYPE_CHECKING:
    from sipr._core import _AuthSpec
    from sipr._protocols import AppLike as App
    from sipr.auth import DigestAuth

log = logging.getLogger("sipr")


@dataclass(frozen=True)
class Contact:
    """A registered contact, as `lookup()` returns it (best q first)."""

    uri: str
    q: float
    expires: int
    received: str | None = None
    path: tuple[str, ...] = field(default_factory=tuple)

    @property
    def next_hop(self) -> str:
        """Where to send a request for this contact: its Path, else the
        address it registered from when it is behind NAT, else the contact itself."""
        if self.path:
            return self.path[0].strip("<>")
        return self.received or self.uri


def aor_of(uri: URI | str) -> str:
    """The address-of-record key: `user@host` (host lower-cased, no port or params)."""
    u = URI(uri) if isinstance(uri, str) else uri
    host = u.host.lower()
    return f"{u.user}@{host}" if u.user else host


def by_q(contacts: list[Contact]) -> list[list[Contact]]:
    """Groups contacts by q, best first: ring each group in parallel, the
    groups one after another (RFC 3261 §16.6 q-value ordering)."""
    groups: dict[float, list[Contact]] = {}
    for c in contacts:
        groups.setdefault(c.q, []).append(c)
    return [groups[q] for q in sorted(groups, reverse=True)]


class RegistrarError(Exception):
    def __init__(
        self, status: int, reason: str | None = None, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        super().__init__(reason or str(status))
        self.status, self.reason, self.headers = status, reason, list(headers)


class Registrar:
    """`await registrar.save(req)` answers a REGISTER; `await
    registrar.lookup(uri)` returns the live contacts of an AoR."""

    #: Every live Registrar: the control interface (`ul.dump`, `ul.rm`, the
    #: registration statistics) reads their stores.
    instances: ClassVar[weakref.WeakSet[Registrar]] = weakref.WeakSet()

    def __init__(
        self,
        store: Store | str = "memory:",
        *,
        domains: list[str] | None = None,
        min_expires: int = 60,
        max_expires: int = 3600,
        default_expires: int = 3600,
        max_contacts: int = 10,
    ) -> None:
        self.store = open_store(store) if isinstance(store, str) else store
        self.domains = {d.lower() for d in domains} if domains else None
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.default_expires = default_expires
        self.max_contacts = max_contacts
        Registrar.instances.add(self)

    def serve(self, app: App, *, auth: DigestAuth | None = None) -> bool:
        """Let the core answer REGISTERs for this registrar's domains (all
        when `domains` is None) without entering Python: the same RFC 3261
        §10.3 processing as `save()`, after `auth.check()` when `auth` is
        given, on the native location table of the `memory:` store.

        Returns False (and changes nothing) when the native path cannot
        stand in for this registrar: a store other than `memory:`, or
        credentials that are not a dict. What it cannot decide exactly
        (a user not in the dict, unusual header forms) still reaches the
        app's route handler, which should keep calling `auth.check()` and
        `save()` for REGISTER. Several registrars may be served; the first
        whose domains match answers. Replies are stateless
        (docs/decisions/0013-native-registrar.md).
        """
        if not isinstance(self.store, MemoryStore):
            return False
        if auth is not None and auth.native_ha1() is None:
            return False
        store = self.store

        async def install() -> None:
            core = app._core
            assert core is not None, "Registrar.serve: the app is not running"
            spec: _AuthSpec | None = None
            if auth is not None:
                spec = {
                    "realm": auth.realm,
                    "secret": auth.secret,
                    "algorithms": list(auth.algorithms),
                    "nonce_ttl": float(auth.nonce_ttl),
                    "check_identity": auth.check_identity,
                    "ha1": auth.native_ha1() or {},
                }
            core.serve_registrar(
                store.location,
                domains=sorted(self.domains) if self.domains is not None else None,
                min_expires=self.min_expires,
                max_expires=self.max_expires,
                default_expires=self.default_expires,
                max_contacts=self.max_contacts,
                auth=spec,
                nonce_counts=auth.nonce_counts if auth is not None else None,
            )
            log.info(
                "registrar: REGISTERs for %s answered in the core (memory store%s)",
                ", ".join(sorted(self.domains)) if self.domains else "every domain",
                f", digest realm {auth.realm!r}" if auth is not None else ", no auth",
            )

        app.on_startup(install)
        return True

    async def save(self, req: Request) -> None:
        try:
            await self._save(req)
        except RegistrarError as e:
            req.reply(e.status, e.reason, headers=e.headers)

    async def _save(self, req: Request) -> None:
        if req.method != "REGISTER":
            raise RegistrarError(405, headers=[("Allow", "REGISTER")])
        to = req.to.uri
        if to.scheme not in ("sip", "sips"):
            raise RegistrarError(404, "Not Found (AoR must be a SIP URI)")
        if self.domains is not None and to.host.lower() not in self.domains:
            raise RegistrarError(404, "Not Found (domain not served here)")
        aor = aor_of(to)
        call_id, cseq = req.call_id, req.cseq.number
        contacts = req.headers.getall("Contact")
        expires_hdr = req.headers.get("Expires")
        default = self.default_expires
        if expires_hdr is not None:
            if not _is_delta(expires_hdr):
                raise RegistrarError(400, "Bad Request (malformed Expires)")
            default = int(expires_hdr)
        existing = {b.contact: b for b in await self.store.bindings(aor)}
        now = time.time()

        if any(c.strip() == "*" for c in contacts):
            # RFC 3261 §10.3 step 6: "*" must stand alone, with Expires: 0.
            if len(contacts) != 1 or expires_hdr is None or int(expires_hdr) != 0:
                raise RegistrarError(400, "Bad Request (Contact: * needs Expires: 0 alone)")
            for b in existing.values():
                if b.call_id == call_id and cseq <= b.cseq:
                    raise RegistrarError(500, "Server Internal Error (out-of-order REGISTER)")
            await self.store.update(aor, [], list(existing))
            existing = {}
        else:
            upsert: list[Binding] = []
            delete: list[str] = []
            path = req.headers.getall("Path")
            received = _nat_source(req)
            ua = req.headers.get("User-Agent")
            for raw in contacts:
                uri, params = _split_contact(raw)
                exp = params.get("expires")
                if exp is not None and not _is_delta(exp):
                    raise RegistrarError(400, "Bad Request (malformed expires parameter)")
                seconds = int(exp) if exp is not None else default
                if 0 < seconds < self.min_expires:
                    raise RegistrarError(
                        423, "Interval Too Brief", [("Min-Expires", str(self.min_expires))]
                    )
                seconds = min(seconds, self.max_expires)
                old = existing.get(uri)
                if old is not None and old.call_id == call_id and cseq <= old.cseq:
                    raise RegistrarError(500, "Server Internal Error (out-of-order REGISTER)")
                if seconds == 0:
                    if uri in existing:
                        delete.append(uri)
                        del existing[uri]
                    continue
                try:
                    q = float(params.get("q", "1"))
                except ValueError:
                    raise RegistrarError(400, "Bad Request (malformed q)") from None
                if not 0 <= q <= 1:
                    raise RegistrarError(400, "Bad Request (q out of range)")
                b = Binding(
                    contact=uri,
                    expires_at=now + seconds,
                    q=q,
                    call_id=call_id,
                    cseq=cseq,
                    received=received,
                    path=path,
                    user_agent=ua,
                    instance=params.get("+sip.instance"),
                )
                existing[uri] = b
                upsert.append(b)
            if len(existing) > self.max_contacts:
                raise RegistrarError(403, f"Forbidden (more than {self.max_contacts} contacts)")
            if upsert or delete:
                await self.store.update(aor, upsert, delete)
        headers = [
            ("Contact", f"<{b.contact}>;expires={b.remaining(now)};q={b.q:g}")
            for b in sorted(existing.values(), key=lambda b: -b.q)
        ]
        headers.append(("Date", email.utils.formatdate(now, usegmt=True)))
        # Supported is a list: every option tag, of every Supported header line.
        if any(t.strip().lower() == "path" for t in req.headers.getall("Supported")):
            headers += [("Path", p) for p in req.headers.getall("Path")]
        req.reply(200, headers=headers)

    async def lookup(self, uri: URI | str) -> list[Contact]:
        """Live contacts of the AoR of `uri`, best q first."""
        now = time.time()
        bindings = await self.store.bindings(aor_of(uri))
        return [
            Contact(b.contact, b.q, b.remaining(now), b.received, tuple(b.path))
            for b in sorted(bindings, key=lambda b: (-b.q, -b.expires_at))
        ]

    async def remove(self, uri: URI | str) -> int:
        return await self.store.remove(aor_of(uri))


def _is_delta(value: str) -> bool:
    """delta-seconds: ASCII digits only (`str.isdigit` also accepts "²", which int() refuses)."""
    v = value.strip()
    return v.isascii() and v.isdigit()


def _host(h: str) -> str:
    return f"[{h}]" if ":" in h else h


_SENT_BY = re.compile(
    r"\s*SIP\s*/\s*2\.0\s*/\s*(\w+)\s+(\[[^\]]*\]|[^\s;:]+)(?:\s*:\s*(\d+))?", re.I
)


def _nat_source(req: Request) -> str | None:
    """The request's source address as a URI when the UA is behind NAT or
    registered over TCP/TLS/WS (its connection), else None.

    NAT is detected as Kamailio's `nat_uac_test("18")` does before
    `fix_nated_register()`: the top Via's sent-by is not the address the
    request came from. Otherwise the Contact is reachable as registered, which
    includes a third-party registration made from another address (RFC 3261
    §10.2): routing that one to the REGISTER's source would reach the wrong UA.
    """
    src = req.source
    here = f"sip:{_host(src.host)}:{src.port};transport={src.transport.lower()}"
    if src.transport.upper() != "UDP":
        # A connection-oriented UA is reached over the connection it registered
        # on (its flow, as in RFC 5626): it may accept no connections at all.
        return here
    m = _SENT_BY.match(req.headers.get("Via") or "")
    if m is None:
        return here
    transport, host, port = m.groups()
    default_port = 5061 if transport.upper() in ("TLS", "WSS") else 5060
    if _same_host(host.strip("[]"), src.host) and int(port or default_port) == src.port:
        return None
    return here


def _same_host(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a.lower() == b.lower()


def _split_contact(raw: str) -> tuple[str, dict[str, str]]:
    """`"Name" <sip:u@h;tr>;expires=60;q=0.5` -> ("sip:u@h;tr", {expires: 60, q: 0.5})."""
    raw = raw.strip()
    if "<" in raw:
        start, end = raw.index("<"), raw.index(">")
        uri, rest = raw[start + 1 : end], raw[end + 1 :]
    else:
        uri, _, rest = raw.partition(";")
        rest = ";" + rest if rest else ""
    params: dict[str, str] = {}
    for p in rest.split(";"):
        k, _, v = p.strip().partition("=")
        if k:
            params[k.lower()] = v.strip().strip('"')
    return uri.strip(), params
