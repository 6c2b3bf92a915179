"""Digest authentication (RFC 2617 / RFC 7616 with RFC 8760 algorithms).

A facade: the check lives once, in Rust (`sipr._core.DigestRules`,
rust/src/registrar/auth.rs), for `DigestAuth.check` and for the core's
native REGISTER path (`Registrar.serve`), which share one nonce secret and
one nonce-count replay table. Nonces carry their own timestamp and an HMAC,
so any sipr instance sharing the secret verifies them without per-nonce
state; only the highest nonce-count seen per nonce is remembered (bounded),
to refuse replays. docs/decisions/0028.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sipr._core import DigestRules, Request, digest_ha1
from sipr._core import Store as NativeHandle
from sipr.store import NativeStore, Store, open_store
from sipr.workers import shared_nonce_secret, shared_nonce_store

#: The digest algorithms sipr offers and verifies (RFC 8760).
ALGORITHMS = ("MD5", "SHA-256")

#: Offered by default: MD5 only. Many deployed phones (baresip 1.0, SIPp,
#: older desk phones) give up on any 401 that carries a SHA-256 challenge,
#: whatever its position; `algorithms=("SHA-256", "MD5")` offers both,
#: strongest first (RFC 8760). See docs/decisions/0020-digest-md5-by-default.md.
DEFAULT_ALGORITHMS: tuple[str, ...] = ("MD5",)

# user -> password (kept in memory only); a callable user -> password |
# {algorithm: HA1} | None (sync or async); or a Store with HA1s kept by
# `sipr user add`.
Credentials = Mapping[str, str] | Callable[[str], Any] | Store


def ha1(user: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """H(username:realm:password) for `algorithm` (MD5 or SHA-256)."""
    return digest_ha1(user, realm, password, algorithm)


def ha1_all(user: str, realm: str, password: str) -> dict[str, str]:
    return {alg: ha1(user, realm, password, alg) for alg in ALGORITHMS}


class DigestAuth:
    """Challenges and verifies Digest credentials for `realm`.

    `await auth.check(req)` returns True when the request is authorised;
    otherwise it has answered (401 for REGISTER, 407 otherwise, 403 for a
    wrong password, a replay, or an identity the user may not use).
    """

    def __init__(
        self,
        realm: str,
        credentials: Credentials,
        *,
        algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS,
        nonce_ttl: float = 300.0,
        secret: bytes | None = None,
        check_identity: bool = True,
        max_tracked_nonces: int = 100_000,
        nonce_store: Store | str | None = None,
    ) -> None:
        unknown = [a for a in algorithms if a not in ALGORITHMS]
        if unknown or not algorithms:
            raise ValueError(f"algorithms must be among {sorted(ALGORITHMS)}, got {unknown}")
        self.realm = realm
        self.credentials = credentials
        self.algorithms = algorithms
        self.nonce_ttl = nonce_ttl
        # Under `--workers` every worker gets the supervisor's secret, so a
        # nonce one worker issued verifies on another.
        self.secret = secret or shared_nonce_secret() or os.urandom(32)
        self.check_identity = check_identity
        # Nonce-counts: in this process, unless a store shared with other
        # workers or hosts keeps them (`--workers` sets one, decision 0051).
        if nonce_store is None:
            nonce_store = shared_nonce_store()
        store = open_store(nonce_store) if isinstance(nonce_store, str) else nonce_store
        #: A store only Python reaches (redis://): checked in `check`.
        self._replay_store = store if hasattr(store, "fresh_nonce") else None
        self.rules = DigestRules(
            realm,
            self.secret,
            list(algorithms),
            nonce_ttl=float(nonce_ttl),
            check_identity=check_identity,
            max_tracked_nonces=max_tracked_nonces,
            replay=store.native.shared_nonce_counts() if isinstance(store, NativeStore) else None,
            replay_checked_by_caller=self._replay_store is not None,
        )

    # -- nonces ---------------------------------------------------------
    def new_nonce(self) -> str:
        return self.rules.new_nonce()

    def nonce_state(self, nonce: str) -> str:
        """'ok', 'stale' (ours but expired) or 'bad' (not ours)."""
        return self.rules.nonce_state(nonce)

    def native_ha1(self) -> dict[str, dict[str, str]] | None:
        """{user: {algorithm: HA1}} for the core's REGISTER path, when the
        credentials are a dict (read now: users added later still reach the
        Python path)."""
        creds = self.credentials
        if not isinstance(creds, Mapping):
            return None
        out: dict[str, dict[str, str]] = {}
        for user, found in creds.items():
            if isinstance(found, str):
                out[user] = {a: ha1(user, self.realm, found, a) for a in self.algorithms}
            elif isinstance(found, Mapping):
                out[user] = {
                    a: v for a, v in found.items() if a in self.algorithms and isinstance(v, str)
                }
        return out

    def native_users(self) -> dict[str, dict[str, str]] | NativeHandle | None:
        """Where the core's REGISTER path finds HA1s: a dict's HA1s, or a
        Rust store's users; None when only Python can ask (a callable, a
        store written in Python)."""
        if isinstance(self.credentials, NativeStore):
            return self.credentials.native
        return self.native_ha1()

    # -- answers --------------------------------------------------------
    def challenge(self, req: Request, *, stale: bool = False) -> None:
        status, reason, headers = self.rules.challenge(req.method, stale=stale)
        req.reply(status, reason, headers=headers)

    async def _ha1(self, user: str, algorithm: str) -> str | None:
        creds = self.credentials
        found: Any
        if isinstance(creds, Mapping):
            found = creds.get(user)
        elif callable(creds):
            found = creds(user)
            if inspect.isawaitable(found):
                found = await found
        else:
            found = await creds.get_user(self.realm, user)
        if found is None:
            return None
        if isinstance(found, str):
            return ha1(user, self.realm, found, algorithm)
        key = found.get(algorithm)
        return key if isinstance(key, str) else None

    async def check(self, req: Request) -> bool:
        step = self.rules.begin(req)
        if isinstance(step, tuple):
            status, reason, headers = step
            req.reply(status, reason, headers=headers)
            return False
        # Authentication-failure bans (docs/security.md): a locked user is
        # refused before its password is checked; every verdict is reported.
        bans = _AuthBans(req, f"{step.user}@{self.realm}")
        if bans.locked():
            req.reply(403, LOCKED_REASON)
            return False
        refusal = self.rules.finish(req, step, await self._ha1(step.user, step.algorithm))
        if refusal is not None:
            status, reason, headers = refusal
            if status == 403:
                bans.failed()
            req.reply(status, reason, headers=headers)
            return False
        replay = self._replay_store
        if replay is not None and not await replay.fresh_nonce(
            step.nonce, step.nc or 0, self.nonce_ttl
        ):
            bans.failed()
            req.reply(403, "Forbidden (replayed credentials)")
            return False
        bans.succeeded()
        return True


AuthCheck = Callable[[Request], Awaitable[bool]]

#: The answer to an attempt for a user locked by too many failures.
LOCKED_REASON = "Forbidden (too many failed attempts, try later)"


class _AuthBans:
    """The core's authentication-failure bans for one attempt of `user`
    (`user@realm`) from the request's source: ask `locked()` first, then
    report `failed()` or `succeeded()`."""

    __slots__ = ("host", "native", "user")

    def __init__(self, req: Request, user: str) -> None:
        self.native = getattr(req, "_security", None)
        self.host = req.source.host
        self.user = user

    def locked(self) -> bool:
        return self.native is not None and self.native.user_locked(self.host, self.user)

    def failed(self) -> None:
        if self.native is not None:
            self.native.digest_failed(self.host, self.user)

    def succeeded(self) -> None:
        if self.native is not None:
            self.native.digest_succeeded(self.host, self.user)
