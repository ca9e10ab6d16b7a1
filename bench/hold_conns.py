#!/usr/bin/env python3
"""Open N HTTP/1.1 keep-alive connections to a proxy (plain, or TLS with ALPN http/1.1 when
--tls), make one request on each, then hold them idle until SIGTERM/SIGINT, so the caller can
measure the proxy's memory per idle connection.

Used by bench/proxy.sh and bench/h2.sh --tls --h1 --idle N. Prints "READY <open> <failed>" once all connections are set up, and on
exit "CLOSED_BY_PEER <n>" (connections the proxy closed while we held them). Sockets close
with SO_LINGER 0 (RST) so thousands of client ports are not left in TIME_WAIT.
"""

import argparse
import asyncio
import signal
import socket
import ssl
import struct
import sys


async def one(host, port, path, tls, sem, conns, stats):
    async with sem:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=tls), 10)
        except (OSError, asyncio.TimeoutError):
            stats["failed"] += 1
            return
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await asyncio.wait_for(reader.readexactly(length), 10)
            if not head.startswith(b"HTTP/1.1 200"):
                stats["non200"] += 1
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
            stats["failed"] += 1
            writer.close()
            return
    conns.append((reader, writer))


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/")
    ap.add_argument("-n", type=int, default=10000)
    ap.add_argument("--parallel", type=int, default=256)
    ap.add_argument("--max-seconds", type=float, default=120.0, help="hard upper bound on runtime")
    ap.add_argument("--tls", action="store_true", help="TLS (certificate not checked), ALPN http/1.1")
    args = ap.parse_args()
    tls = None
    if args.tls:
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
        tls.set_alpn_protocols(["http/1.1"])

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.call_later(args.max_seconds, stop.set)

    sem = asyncio.Semaphore(args.parallel)
    conns = []
    stats = {"failed": 0, "non200": 0}
    await asyncio.gather(*(one(args.host, args.port, args.path, tls, sem, conns, stats) for _ in range(args.n)))
    print(f"READY {len(conns)} {stats['failed']} {stats['non200']}", flush=True)

    await stop.wait()
    # A held connection the proxy closed reads EOF immediately.
    closed = 0
    for reader, _ in conns:
        if reader.at_eof() or reader.exception() is not None:
            closed += 1
    print(f"CLOSED_BY_PEER {closed}", flush=True)
    for _, writer in conns:
        writer.transport.abort()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
