"""Traffic endpoints the tests run inside namespaces (`ip netns exec NS python3 traffic.py …`).

Every mode is bounded: a byte or datagram count and a timeout. Each prints one JSON line.
"""

import argparse
import hashlib
import json
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003


def pattern(nbytes: int, seed: int) -> bytes:
    """Deterministic, incompressible-looking bytes (SHA-256 in counter mode)."""
    out = bytearray()
    i = 0
    while len(out) < nbytes:
        out += hashlib.sha256(struct.pack("<QQ", seed, i)).digest() * 64
        i += 1
    return bytes(out[:nbytes])


def tcp_recv(bind: str, port: int, nbytes: int, timeout: float) -> dict[str, object]:
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((bind, port))
    srv.listen(1)
    srv.settimeout(timeout)
    print(json.dumps({"listening": port}), flush=True)
    conn, _ = srv.accept()
    conn.settimeout(timeout)
    h = hashlib.sha256()
    got = 0
    deadline = time.monotonic() + timeout
    while got < nbytes and time.monotonic() < deadline:
        chunk = conn.recv(1 << 20)
        if not chunk:
            break
        h.update(chunk)
        got += len(chunk)
    conn.close()
    srv.close()
    return {"bytes": got, "sha256": h.hexdigest()}


def tcp_send(host: str, port: int, nbytes: int, seed: int, timeout: float) -> dict[str, object]:
    data = pattern(nbytes, seed)
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)
    sock.settimeout(timeout)
    while sock.recv(4096):
        pass
    sock.close()
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def udp_recv(bind: str, port: int, count: int, timeout: float) -> dict[str, object]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((bind, port))
    sock.settimeout(timeout)
    print(json.dumps({"listening": port}), flush=True)
    got: list[dict[str, object]] = []
    try:
        while len(got) < count:
            data = sock.recv(70000)
            got.append({"len": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    except TimeoutError:
        pass
    return {"datagrams": got}


def udp_send(host: str, port: int, sizes: list[int], seed: int) -> dict[str, object]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent = []
    for i, size in enumerate(sizes):
        data = pattern(size, seed + i)
        sock.sendto(data, (host, port))
        sent.append({"len": size, "sha256": hashlib.sha256(data).hexdigest()})
        time.sleep(0.01)
    return {"datagrams": sent}


def sniff(ifname: str, seconds: float, limit: int) -> dict[str, object]:
    """Count frames seen on an interface by source MAC and by length."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((ifname, 0))
    sock.settimeout(0.2)
    print(json.dumps({"sniffing": ifname}), flush=True)
    by_src: dict[str, int] = {}
    lengths: list[int] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and len(lengths) < limit:
        try:
            frame, addr = sock.recvfrom(70000)
        except TimeoutError:
            continue
        if addr[2] == socket.PACKET_OUTGOING:
            continue
        src = frame[6:12].hex(":")
        by_src[src] = by_src.get(src, 0) + 1
        lengths.append(len(frame))
    return {"by_src": by_src, "lengths": lengths}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["tcp-recv", "tcp-send", "udp-recv", "udp-send", "sniff"])
    p.add_argument("--host", default="")
    p.add_argument("--port", type=int, default=5201)
    p.add_argument("--bytes", type=int, default=0)
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--sizes", default="")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--ifname", default="")
    a = p.parse_args()
    if a.mode == "tcp-recv":
        r = tcp_recv(a.host, a.port, a.bytes, a.timeout)
    elif a.mode == "tcp-send":
        r = tcp_send(a.host, a.port, a.bytes, a.seed, a.timeout)
    elif a.mode == "udp-recv":
        r = udp_recv(a.host, a.port, a.count, a.timeout)
    elif a.mode == "udp-send":
        r = udp_send(a.host, a.port, [int(s) for s in a.sizes.split(",")], a.seed)
    else:
        r = sniff(a.ifname, a.timeout, a.count)
    print(json.dumps(r), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
