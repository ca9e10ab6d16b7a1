#!/usr/bin/env python3
"""Open N HTTP/2 connections to a proxy (h2c prior knowledge, or TLS with ALPN h2), make one
request on each, then hold them idle — answering SETTINGS and PING as a client must — until
SIGTERM/SIGINT, so the caller can measure the proxy's memory per idle HTTP/2 connection.

Used by `bench/h2.sh --idle N`. Prints "READY <open> <failed>" once every connection has its
answer, and on exit "CLOSED_BY_PEER <n>". Standard library only: the frames are written by hand
(a HEADERS frame with a static-table HPACK block; no Huffman, no dynamic table).
"""

import argparse
import asyncio
import signal
import ssl
import struct
import sys

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, SETTINGS, PING, GOAWAY = 0x0, 0x1, 0x4, 0x6, 0x7
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def request_block(authority, tls):
    # :method GET (2), :scheme http/https (6/7), :path / (4): indexed; :authority (1): literal
    # without indexing, indexed name, plain value.
    value = authority.encode()
    return bytes([0x82, 0x87 if tls else 0x86, 0x84, 0x01, len(value)]) + value


async def read_frame(reader):
    head = await reader.readexactly(9)
    length = int.from_bytes(head[:3], "big")
    kind, flags = head[3], head[4]
    stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
    return kind, flags, stream, await reader.readexactly(length)


async def one(args, sem, held, stats):
    async with sem:
        context = None
        if args.tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            context.set_alpn_protocols(["h2"])
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(args.host, args.port, ssl=context), 10)
            writer.write(PREFACE + frame(SETTINGS, 0, 0)
                         + frame(HEADERS, END_STREAM | END_HEADERS, 1,
                                 request_block(f"{args.host}:{args.port}", args.tls)))
            await writer.drain()
            answered = False
            while not answered:
                kind, flags, stream, payload = await asyncio.wait_for(read_frame(reader), 10)
                if kind == SETTINGS and not flags & ACK:
                    writer.write(frame(SETTINGS, ACK, 0))
                elif kind == PING and not flags & ACK:
                    writer.write(frame(PING, ACK, 0, payload))
                elif kind in (DATA, HEADERS) and stream == 1 and flags & END_STREAM:
                    answered = True
                elif kind == GOAWAY:
                    raise ConnectionError("GOAWAY")
            await writer.drain()
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            stats["failed"] += 1
            return
        held.append((reader, writer))


async def keep(reader, writer, stats):
    """Answers the proxy's SETTINGS and PING while the connection is held."""
    try:
        while True:
            kind, flags, _, payload = await read_frame(reader)
            if kind == SETTINGS and not flags & ACK:
                writer.write(frame(SETTINGS, ACK, 0))
            elif kind == PING and not flags & ACK:
                writer.write(frame(PING, ACK, 0, payload))
            elif kind == GOAWAY:
                break
    except (OSError, asyncio.IncompleteReadError):
        pass
    stats["closed"] += 1


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--max-seconds", type=float, default=120)
    args = ap.parse_args()
    stats = {"failed": 0, "closed": 0}
    held = []
    sem = asyncio.Semaphore(128)
    await asyncio.gather(*(one(args, sem, held, stats) for _ in range(args.n)))
    keepers = [asyncio.ensure_future(keep(r, w, stats)) for r, w in held]
    print(f"READY {len(held)} {stats['failed']}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), args.max_seconds)
    except asyncio.TimeoutError:
        pass
    print(f"CLOSED_BY_PEER {stats['closed']}", flush=True)
    for k in keepers:
        k.cancel()
    for _, w in held:
        w.transport.abort()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
