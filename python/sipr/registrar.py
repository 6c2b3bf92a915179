"""Registrar and location service (RFC 3261 §10.3, Path RFC 3327, NAT
source addresses as Kamailio's `received`).

A facade: the rules live once, in Rust (`sipr._core.RegistrarRules`,
rust/src/registrar/), for this Python entry point and for the core's native
REGISTER path (`Registrar.serve`). docs/decisions/0028."""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from sipr import events, workers
from sipr._core import URI, Binding, Core, RegistrarRules, Request, aor_key
from sipr._core import Store as NativeHandle
from sipr.store import NativeStore, Store, open_store

if TYPE_CHECKING:
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


def _with_path(b: Binding, owner: str) -> Binding:
    if b.path:
        return b
    return Binding(
        b.contact, b.expires_at, b.q, b.call_id, b.cseq, b.received, [owner], b.user_agent,
        b.instance,
    )  # fmt: skip


def _path_from_here(path: list[str]) -> tuple[str, ...]:
    """A binding's Path as seen from this process: the hop naming us (we
    hold the phone's connection) is dropped."""
    if path and workers.is_own_route(path[0]):
        return tuple(path[1:])
    return tuple(path)


def aor_of(uri: URI | str) -> str:
    """The address-of-record key: `user@host` (host lower-cased, no port or params)."""
    u = URI(uri) if isinstance(uri, str) else uri
    return aor_key(u.user, u.host)


def by_q(contacts: list[Contact]) -> list[list[Contact]]:
    """Groups contacts by q, best first: ring each group in parallel, the
    groups one after another (RFC 3261 §16.6 q-value ordering)."""
    groups: dict[float, list[Contact]] = {}
    for c in contacts:
        groups.setdefault(c.q, []).append(c)
    return [groups[q] for q in sorted(groups, reverse=True)]


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
        owner_path: bool | None = None,
    ) -> None:
        self.store = open_store(store) if isinstance(store, str) else store
        #: Whether a registration over TCP/TLS/WS records this process as
        #: the holder of its connection (a Path to us, decision 0052), so
        #: other workers and hosts sharing the store relay through us. By
        #: default: under `--workers`, or with a store not in this process
        #: (redis://, an application's own).
        self.owner_path = (
            owner_path
            if owner_path is not None
            else workers.current() is not None or not isinstance(self.store, NativeStore)
        )
        self.domains = {d.lower() for d in domains} if domains else None
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.default_expires = default_expires
        self.max_contacts = max_contacts
        self.rules = RegistrarRules(
            domains=sorted(self.domains) if self.domains is not None else None,
            min_expires=min_expires,
            max_expires=max_expires,
            default_expires=default_expires,
            max_contacts=max_contacts,
        )
        Registrar.instances.add(self)
        # Expiry timers of the bindings saved while registration hooks exist.
        self._expiry: dict[tuple[str, str], asyncio.TimerHandle] = {}

    def _native_store(self) -> NativeHandle | None:
        return self.store.native if isinstance(self.store, NativeStore) else None

    def serve(self, app: App, *, auth: DigestAuth | None = None) -> bool:
        """Let the core answer REGISTERs for this registrar's domains (all
        when `domains` is None) without entering Python: the same rules as
        `save()`, after the same digest check as `auth.check()` when `auth`
        is given, on this registrar's store.

        Returns False (and changes nothing) when the native path cannot
        stand in for this registrar: a store written in Python (`redis://`,
        an application's own), or credentials only Python can read (a
        callable, a Python store). What it cannot decide (a user missing
        from a credentials dict, which may have grown since startup) still
        reaches the app's route handler, which should keep calling
        `auth.check()` and `save()` for REGISTER. Several registrars may be
        served; the first whose domains match answers. Replies are stateless
        (docs/decisions/0013-native-registrar.md).
        """
        native = self._native_store()
        if native is None:
            return False
        users = auth.native_users() if auth is not None else None
        if auth is not None and users is None:
            return False

        async def install() -> None:
            core = app._core
            assert isinstance(core, Core), "Registrar.serve: the app is not running"
            if app.events.registration:
                log.info("registrar: registration hooks: REGISTERs are answered in Python")
                return
            digest = (auth.rules, users) if auth is not None and users is not None else None
            core.serve_registrar(self.rules, native, digest)
            log.info(
                "registrar: REGISTERs for %s answered in the core (%s store%s)",
                ", ".join(sorted(self.domains)) if self.domains else "every domain",
                native.url.partition(":")[0],
                f", digest realm {auth.realm!r}" if auth is not None else ", no auth",
            )

        app.on_startup(install)
        return True

    async def save(self, req: Request) -> None:
        """Answers the REGISTER `req`: 200 with the AoR's bindings, or the
        refusal (400, 403, 404, 405, 423, 500 as RFC 3261 §10.3 says)."""
        if not events.registration_hooks():
            return await self._save(req)
        aor, _ = self.rules.target(req)
        if aor is None:
            return await self._save(req)
        before = {b.contact: b for b in await self.store.bindings(aor)}
        await self._save(req)
        after = {b.contact: b for b in await self.store.bindings(aor)}
        self._announce_changes(aor, before, after, req)

    def _announce_changes(
        self, aor: str, before: dict[str, Binding], after: dict[str, Binding], req: Request
    ) -> None:
        src = req.source
        source = f"{src.transport.lower()}:{src.host}:{src.port}"
        for contact, b in after.items():
            old = before.get(contact)
            if old is not None and (old.call_id, old.cseq) == (b.call_id, b.cseq):
                continue  # a fetch, or another contact's REGISTER
            kind: events.RegistrationKind = "added" if old is None else "refreshed"
            events.emit_registration(
                events.RegistrationEvent(kind, aor, contact, b.remaining(), source)
            )
            self._expire_later(aor, contact, b.expires_at)
        for contact in before.keys() - after.keys():
            timer = self._expiry.pop((aor, contact), None)
            if timer is not None:
                timer.cancel()
            events.emit_registration(events.RegistrationEvent("removed", aor, contact, 0, source))

    def _expire_later(self, aor: str, contact: str, expires_at: float) -> None:
        loop = asyncio.get_running_loop()
        old = self._expiry.pop((aor, contact), None)
        if old is not None:
            old.cancel()
        delay = max(0.0, expires_at - time.time())
        self._expiry[(aor, contact)] = loop.call_later(
            delay, lambda: loop.create_task(self._check_expired(aor, contact, expires_at))
        )

    async def _check_expired(self, aor: str, contact: str, expires_at: float) -> None:
        self._expiry.pop((aor, contact), None)
        live = {b.contact: b for b in await self.store.bindings(aor)}
        binding = live.get(contact)
        if binding is not None and binding.expires_at > expires_at:
            self._expire_later(aor, contact, binding.expires_at)  # refreshed meanwhile
            return
        if binding is not None and binding.remaining() > 0:
            self._expire_later(aor, contact, binding.expires_at)
            return
        events.emit_registration(events.RegistrationEvent("expired", aor, contact, 0))

    async def _save(self, req: Request) -> None:
        native = self._native_store()
        owner = self._owner_route(req)
        if native is not None and owner is None:
            status, reason, headers = self.rules.save(req, native)
        else:
            aor, refusal = self.rules.target(req)
            if refusal is None and aor is not None:
                existing = await self.store.bindings(aor)
                refusal, upsert, delete = self.rules.decide(req, existing)
                if owner is not None:
                    upsert = [_with_path(b, owner) for b in upsert]
                if upsert or delete:
                    await self.store.update(aor, upsert, delete)
            assert refusal is not None
            status, reason, headers = refusal
        req.reply(status, reason, headers=headers)

    async def lookup(self, uri: URI | str) -> list[Contact]:
        """Live contacts of the AoR of `uri`, best q first."""
        bindings = await self.store.bindings(aor_of(uri))
        return [
            Contact(b.contact, b.q, b.remaining(), b.received, _path_from_here(b.path))
            for b in sorted(bindings, key=lambda b: (-b.q, -b.expires_at))
        ]

    def _owner_route(self, req: Request) -> str | None:
        """Our Path value for a REGISTER over a connection, when we record owners."""
        if not self.owner_path or req.headers.get("Path"):
            return None  # an edge proxy's Path already leads to the phone
        source = req.source
        return workers.owner_route(source.transport, source.host, source.port)

    async def remove(self, uri: URI | str) -> int:
        return await self.store.remove(aor_of(uri))
