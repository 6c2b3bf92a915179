"""A tiny billing HTTP service for examples/billing_async.py and its tests.

    python examples/billing_service.py --port 8089 --delay 0.05 --deny bob --hang carol

GET /authorize?user=NAME answers "yes" or "no" after --delay seconds; users
in --hang never get an answer (a billing outage).
"""

from __future__ import annotations

import argparse
import asyncio
from urllib.parse import parse_qs, urlsplit


async def handle(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, args: argparse.Namespace
) -> None:
    try:
        while True:
            line = await reader.readline()
            if not line:
                return
            target = line.decode().split(" ")[1] if line.count(b" ") >= 2 else "/"
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            user = parse_qs(urlsplit(target).query).get("user", [""])[0]
            if user in args.hang:
                await asyncio.Event().wait()
            await asyncio.sleep(args.delay)
            body = b"no" if user in args.deny else b"yes"
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body)
            )
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8089)
    p.add_argument("--delay", type=float, default=0.05)
    p.add_argument("--deny", nargs="*", default=[])
    p.add_argument("--hang", nargs="*", default=[])
    args = p.parse_args()
    server = await asyncio.start_server(lambda r, w: handle(r, w, args), args.host, args.port)
    port = server.sockets[0].getsockname()[1]
    print(f"billing: listening on {args.host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
