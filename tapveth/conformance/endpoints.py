"""Traffic endpoints run inside namespaces (`ip netns exec NS python3 -m
tapveth.conformance.endpoints MODE …`): TCP and UDP transfers checked by SHA-256, raw frames of
exact sizes sent and received with AF_PACKET, and a frame counter.

Every mode is bounded: a byte or datagram count and a timeout. Each prints one JSON line (a
receiver prints a first one when it is ready), and imports nothing beyond the standard library,
so that it starts fast.
"""

import argparse
import errno
import hashlib
import json
import socket
import struct
import sys
import time
from collections.abc import Iterator

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


def tcp_send(
    host: str, port: int, nbytes: int, seed: int, timeout: float, rate: float = 0.0
) -> dict[str, object]:
    """Send nbytes; with rate (bytes/s), spread them over time so that a stream spans events."""
    data = pattern(nbytes, seed)
    sock = socket.create_connection((host, port), timeout=timeout)
    if rate:
        chunk = 16384
        start = time.monotonic()
        for off in range(0, nbytes, chunk):
            sock.sendall(data[off : off + chunk])
            ahead = (off + chunk) / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
    else:
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


def packet_socket(ifname: str, ready: str) -> socket.socket:
    """An AF_PACKET socket on ifname (every interface of the namespace if empty); prints the
    `ready` line once it is bound, so the caller knows frames sent now will be seen."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    if ifname:
        sock.bind((ifname, 0))
    sock.settimeout(0.1)
    print(json.dumps({ready: ifname or "*"}), flush=True)
    return sock


def incoming(sock: socket.socket, seconds: float) -> Iterator[tuple[bytes, int]]:
    """(frame, packet type) of every frame arriving for `seconds`; our own outgoing copies are
    skipped, and an admin-down interface (ENETDOWN) is waited out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            frame, addr = sock.recvfrom(70000)
        except TimeoutError:
            continue
        except OSError as exc:
            if exc.errno != errno.ENETDOWN:
                raise
            time.sleep(0.1)
            continue
        if addr[2] != socket.PACKET_OUTGOING:
            yield frame, addr[2]


def sniff(ifname: str, seconds: float, limit: int, mark: bytes) -> dict[str, object]:
    """Count frames seen on an interface (every interface of the namespace if ifname is
    empty) by source MAC and by length, and those carrying `mark` (if not empty)."""
    sock = packet_socket(ifname, "sniffing")
    by_src: dict[str, int] = {}
    lengths: list[int] = []
    marked = 0
    for frame, _ in incoming(sock, seconds):
        src = frame[6:12].hex(":")
        by_src[src] = by_src.get(src, 0) + 1
        lengths.append(len(frame))
        marked += bool(mark) and mark in frame
        if len(lengths) >= limit:
            break
    return {"by_src": by_src, "lengths": lengths, "marked": marked}


MAGIC = b"TVCF"
ETHERTYPE = 0x88B5  # IEEE local experimental


def raw_frame(dst: bytes, src: bytes, size: int, seq: int, vlan: int | None) -> bytes:
    """A frame of exactly `size` bytes (no FCS) carrying MAGIC and a sequence number."""
    head = dst + src
    if vlan is not None:
        head += struct.pack("!HH", 0x8100, vlan)
    head += struct.pack("!H", ETHERTYPE)
    body = MAGIC + struct.pack("!I", seq)
    return (head + body).ljust(size, b"\0")


def raw_send(
    ifname: str, dst: str, sizes: list[int], vlan: int | None, seq0: int
) -> dict[str, object]:
    """Send one frame per size from an AF_PACKET socket; report what each send() returned."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((ifname, 0))
    with open(f"/sys/class/net/{ifname}/address") as f:
        src = bytes.fromhex(f.read().strip().replace(":", ""))
    results = []
    for i, size in enumerate(sizes):
        frame = raw_frame(bytes.fromhex(dst.replace(":", "")), src, size, seq0 + i, vlan)
        try:
            sock.send(frame)
            results.append("ok")
        except OSError as exc:
            results.append(errno_name(exc.errno))
        time.sleep(0.002)
    return {"results": results}


def errno_name(code: int | None) -> str:
    return errno.errorcode.get(code or 0, str(code))


def raw_recv(ifname: str, seconds: float, count: int) -> dict[str, object]:
    """Collect the frames carrying MAGIC: their sequence numbers and packet types."""
    sock = packet_socket(ifname, "receiving")
    got: dict[int, int] = {}
    for frame, pkttype in incoming(sock, seconds):
        at = frame.find(MAGIC, 12, 40)
        if at < 0:
            continue
        got[struct.unpack("!I", frame[at + 4 : at + 8])[0]] = pkttype
        if len(got) >= count:
            break
    return {"seqs": sorted(got), "pkttypes": {str(k): v for k, v in sorted(got.items())}}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument(
        "mode",
        choices=["tcp-recv", "tcp-send", "udp-recv", "udp-send", "sniff", "raw-send", "raw-recv"],
    )
    p.add_argument("--host", default="")
    p.add_argument("--port", type=int, default=5201)
    p.add_argument("--bytes", type=int, default=0)
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--sizes", default="")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--ifname", default="")
    p.add_argument("--dst", default="ff:ff:ff:ff:ff:ff")
    p.add_argument("--vlan", type=int, default=None)
    p.add_argument("--rate", type=float, default=0.0)
    p.add_argument("--mark", default="", help="sniff: also count frames carrying this text")
    a = p.parse_args()
    if a.mode == "tcp-recv":
        r = tcp_recv(a.host, a.port, a.bytes, a.timeout)
    elif a.mode == "tcp-send":
        r = tcp_send(a.host, a.port, a.bytes, a.seed, a.timeout, a.rate)
    elif a.mode == "udp-recv":
        r = udp_recv(a.host, a.port, a.count, a.timeout)
    elif a.mode == "udp-send":
        r = udp_send(a.host, a.port, [int(s) for s in a.sizes.split(",")], a.seed)
    elif a.mode == "raw-send":
        r = raw_send(a.ifname, a.dst, [int(s) for s in a.sizes.split(",")], a.vlan, a.seed)
    elif a.mode == "raw-recv":
        r = raw_recv(a.ifname, a.timeout, a.count)
    else:
        r = sniff(a.ifname, a.timeout, a.count, a.mark.encode())
    print(json.dumps(r), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
