"""The client side of HTTP Digest for the test user agents (RFC 7616 with
qop=auth, RFC 8760 algorithms): answers a 401/407 challenge."""

from __future__ import annotations

import hashlib
import os
import re

_PARAM = re.compile(r'([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]+)')
_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


def parse_challenge(value: str) -> dict[str, str]:
    """The parameters of one `Digest ...` challenge, names lower-cased."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise ValueError(f"not a Digest challenge: {value!r}")
    return {k.lower(): v.strip('"') for k, v in _PARAM.findall(rest)}


def pick(challenges: list[str]) -> dict[str, str]:
    """The first challenge whose algorithm this client speaks (the server
    lists the strongest first, RFC 8760)."""
    for value in challenges:
        params = parse_challenge(value)
        if params.get("algorithm", "MD5").upper() in _HASHES:
            return params
    raise ValueError(f"no Digest challenge with MD5 or SHA-256 among {challenges}")


def authorization(
    challenge: dict[str, str], method: str, uri: str, user: str, password: str, nc: int = 1
) -> str:
    """The Authorization / Proxy-Authorization value answering `challenge`."""
    algorithm = challenge.get("algorithm", "MD5").upper()
    h = _HASHES[algorithm]

    def digest(text: str) -> str:
        return h(text.encode()).hexdigest()

    realm, nonce = challenge["realm"], challenge["nonce"]
    ha1 = digest(f"{user}:{realm}:{password}")
    ha2 = digest(f"{method}:{uri}")
    parts = [
        f'username="{user}"',
        f'realm="{realm}"',
        f'nonce="{nonce}"',
        f'uri="{uri}"',
        f"algorithm={algorithm}",
    ]
    qops = [q.strip() for q in challenge.get("qop", "").split(",") if q.strip()]
    if "auth" in qops:
        cnonce = os.urandom(8).hex()
        count = f"{nc:08x}"
        response = digest(f"{ha1}:{nonce}:{count}:{cnonce}:auth:{ha2}")
        parts += ["qop=auth", f"nc={count}", f'cnonce="{cnonce}"']
    else:
        response = digest(f"{ha1}:{nonce}:{ha2}")
    parts.append(f'response="{response}"')
    if "opaque" in challenge:
        parts.append(f'opaque="{challenge["opaque"]}"')
    return "Digest " + ", ".join(parts)
