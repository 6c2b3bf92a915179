"""Digest authentication (RFC 2617 / RFC 7616 with RFC 8760 algorithms).

Nonces carry their own timestamp and an HMAC, so any sipr instance sharing
the secret verifies them without per-nonce state; only the highest
nonce-count seen per nonce is remembered (bounded), to refuse replays.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sipr._core import NonceCounts, Request
from sipr.store import Store

ALGORITHMS = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}

#: Offered by default: MD5 only. Many deployed phones (baresip 1.0, SIPp,
#: older desk phones) give up on any 401 that carries a SHA-256 challenge,
#: whatever its position; `algorithms=("SHA-256", "MD5")` offers both,
#: strongest first (RFC 8760). See docs/decisions/0020-digest-md5-by-default.md.
DEFAULT_ALGORITHMS: tuple[str, ...] = ("MD5",)

# user -> password (kept in memory only); a callable user -> password |
# {algorithm: HA1} | None (sync or async); or a Store with HA1s kept by
# `sipr user add`.
Credentials = Mapping[str, str] | Callable[[str], Any] | Store

_PARAM = re.compile(r'\s*([\w-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*(?:,|$)')


def ha1(user: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """H(username:realm:password) for `algorithm` (MD5 or SHA-256)."""
    return ALGORITHMS[algorithm](f"{user}:{realm}:{password}".encode()).hexdigest()


def ha1_all(user: str, realm: str, password: str) -> dict[str, str]:
    return {alg: ha1(user, realm, password, alg) for alg in ALGORITHMS}


def parse_credentials(value: str) -> dict[str, str] | None:
    """Parses `Digest k=v, ...` into a dict (quotes removed); None if not Digest."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        return None
    out = {}
    for m in _PARAM.finditer(rest):
        v = m.group(2)
        if v.startswith('"'):
            v = re.sub(r"\\(.)", r"\1", v[1:-1])
        out[m.group(1).lower()] = v
    return out


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
    ) -> None:
        unknown = [a for a in algorithms if a not in ALGORITHMS]
        if unknown or not algorithms:
            raise ValueError(f"algorithms must be among {sorted(ALGORITHMS)}, got {unknown}")
        self.realm = realm
        self.credentials = credentials
        self.algorithms = algorithms
        self.nonce_ttl = nonce_ttl
        self.secret = secret or os.urandom(32)
        self.check_identity = check_identity
        # Native and shared with the core's REGISTER path (Registrar.serve),
        # so a nonce-count used on either path is refused on both.
        self.nonce_counts = NonceCounts(max_tracked_nonces)

    # -- nonces ---------------------------------------------------------
    def _mac(self, stamp: str) -> str:
        msg = f"{stamp}:{self.realm}".encode()
        return hmac.new(self.secret, msg, hashlib.sha256).hexdigest()[:32]

    def new_nonce(self) -> str:
        # The random part makes every nonce unique: two challenges in the same
        # millisecond must not share nonce-count state (replay detection).
        stamp = f"{int(time.time() * 1000):x}-{os.urandom(6).hex()}"
        return f"{stamp}.{self._mac(stamp)}"

    def nonce_state(self, nonce: str) -> str:
        """'ok', 'stale' (ours but expired) or 'bad' (not ours)."""
        stamp, _, mac = nonce.partition(".")
        # Bytes: compare_digest raises TypeError on str with non-ASCII characters.
        if not stamp or not hmac.compare_digest(mac.encode(), self._mac(stamp).encode()):
            return "bad"
        ts = stamp.partition("-")[0]
        try:
            age = time.time() - int(ts, 16) / 1000
        except ValueError:
            return "bad"
        return "ok" if -5 < age <= self.nonce_ttl else "stale"

    def _fresh_nc(self, nonce: str, nc: int) -> bool:
        return 0 < nc < 1 << 64 and self.nonce_counts.fresh(nonce, nc)

    def native_ha1(self) -> dict[str, dict[str, str]] | None:
        """{user: {algorithm: HA1}} for the core's REGISTER path, when the
        credentials are a dict (a callable or a store is asked per request,
        so only the Python path can use it)."""
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

    # -- answers --------------------------------------------------------
    def challenge(self, req: Request, *, stale: bool = False) -> None:
        status = 401 if req.method == "REGISTER" else 407
        name = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
        nonce = self.new_nonce()
        headers = [
            (
                name,
                f'Digest realm="{self.realm}", nonce="{nonce}", qop="auth", '
                f"algorithm={alg}" + (", stale=true" if stale else ""),
            )
            for alg in self.algorithms
        ]
        req.reply(status, headers=headers)

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
        return found.get(algorithm)

    async def check(self, req: Request) -> bool:
        header = "Authorization" if req.method == "REGISTER" else "Proxy-Authorization"
        cred = None
        for value in req.headers.getall(header):
            c = parse_credentials(value)
            if c is not None and c.get("realm") == self.realm:
                cred = c
                break
        if cred is None:
            self.challenge(req)
            return False
        nonce, user = cred.get("nonce", ""), cred.get("username", "")
        algorithm = cred.get("algorithm", "MD5").upper().replace("SHA256", "SHA-256")
        state = self.nonce_state(nonce)
        if state != "ok" or algorithm not in self.algorithms:
            self.challenge(req, stale=state == "stale")
            return False
        if cred.get("qop") != "auth" or not cred.get("cnonce"):
            self.challenge(req)
            return False
        try:
            nc = int(cred.get("nc", ""), 16)
        except ValueError:
            self.challenge(req)
            return False
        key = await self._ha1(user, algorithm)
        h = ALGORITHMS[algorithm]
        if key is None:
            req.reply(403, "Forbidden (unknown user or wrong password)")
            return False
        ha2 = h(f"{req.method}:{cred.get('uri', '')}".encode()).hexdigest()
        expected = h(
            f"{key}:{nonce}:{cred.get('nc')}:{cred['cnonce']}:auth:{ha2}".encode()
        ).hexdigest()
        if not hmac.compare_digest(expected.encode(), cred.get("response", "").encode()):
            req.reply(403, "Forbidden (unknown user or wrong password)")
            return False
        if not self._fresh_nc(nonce, nc):
            req.reply(403, "Forbidden (replayed credentials)")
            return False
        if self.check_identity and not self._identity_ok(req, user):
            req.reply(403, "Forbidden (identity not allowed for this user)")
            return False
        return True

    def _identity_ok(self, req: Request, user: str) -> bool:
        # A user may register only their own AoR and call only as themselves.
        uri = req.to.uri if req.method == "REGISTER" else req.from_.uri
        return uri.user == user


AuthCheck = Callable[[Request], Awaitable[bool]]
