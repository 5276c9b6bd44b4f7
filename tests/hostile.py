"""Hostile frames for the robustness tests, sent from inside a namespace with AF_PACKET:
runts, oversize frames, random bytes, stacked VLAN tags, bogus EtherTypes, a broadcast storm,
and (with PACKET_VNET_HDR) malformed virtio headers. Bounded in count; prints one JSON line
with how many frames each kind got out of the sender."""

import argparse
import json
import random
import socket
import struct
import sys

from scapy.layers.l2 import Dot1AD, Dot1Q, Ether
from scapy.packet import Raw

SOL_PACKET = 263
PACKET_VNET_HDR = 15
MARK = b"TVHOSTILE"


def send_all(sock: socket.socket, frames: list[bytes]) -> int:
    ok = 0
    for f in frames:
        try:
            sock.send(f)
            ok += 1
        except OSError:
            pass  # refused by the sender's kernel (EINVAL, EMSGSIZE...): fine, counted as not out
    return ok


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--ifname", required=True)
    p.add_argument("--dst", required=True)
    p.add_argument("--count", type=int, default=500)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    rnd = random.Random(a.seed)
    with open(f"/sys/class/net/{a.ifname}/address") as f:
        src = f.read().strip()
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((a.ifname, 0))
    out: dict[str, int] = {}
    out["runts"] = send_all(
        sock, [bytes(rnd.randrange(256) for _ in range(n)) for n in range(0, 14)]
    )
    out["oversize"] = send_all(
        sock,
        [
            bytes(Ether(dst=a.dst, src=src, type=0x88B5) / Raw(MARK + bytes(n)))
            for n in (1600, 4000, 9000)
        ],
    )
    out["random"] = send_all(
        sock,
        [bytes(rnd.randrange(256) for _ in range(rnd.randrange(14, 1515))) for _ in range(a.count)],
    )
    out["stacked_vlan"] = send_all(
        sock,
        [
            bytes(
                Ether(dst=a.dst, src=src)
                / Dot1AD(vlan=7)
                / Dot1Q(vlan=8)
                / Dot1Q(vlan=9)
                / Raw(MARK)
            )
            for _ in range(50)
        ],
    )
    out["bogus_ethertype"] = send_all(
        sock,
        [
            bytes(Ether(dst=a.dst, src=src, type=rnd.randrange(0, 0x600)) / Raw(MARK + bytes(40)))
            for _ in range(100)
        ],
    )
    out["broadcast_storm"] = send_all(
        sock,
        [bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=src, type=0x88B5) / Raw(MARK))] * (a.count * 4),
    )
    vsock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    vsock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    vsock.bind((a.ifname, 0))
    frame = bytes(Ether(dst=a.dst, src=src, type=0x0800) / Raw(MARK + bytes(80)))
    headers = []
    for _ in range(a.count):
        headers.append(
            struct.pack(
                "<BBHHHH",
                rnd.choice([0, 1, 2, 3, 0xFF]),
                rnd.choice([0, 1, 3, 4, 5, 0x80, 0x7F]),
                rnd.randrange(65536),
                rnd.randrange(65536),
                rnd.randrange(200),
                rnd.randrange(200),
            )
        )
    out["bad_vnet_hdr"] = send_all(vsock, [h + frame for h in headers])
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
