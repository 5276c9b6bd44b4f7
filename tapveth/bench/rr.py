"""A TCP request/response probe for `tapveth bench`: 1-byte ping-pong over one connection,
reporting transactions per second. Run inside namespaces with `python -m tapveth.bench.rr`."""

import argparse
import json
import socket
import sys
import time


def serve(bind: str, port: int, timeout: float) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((bind, port))
    srv.listen(1)
    srv.settimeout(timeout)
    print("ready", flush=True)
    conn, _ = srv.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.settimeout(timeout)
    recv, send = conn.recv, conn.sendall
    while True:
        b = recv(1)
        if not b:
            break
        send(b)
    conn.close()
    srv.close()


def client(host: str, port: int, seconds: float) -> dict[str, float]:
    sock = socket.create_connection((host, port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    recv, send = sock.recv, sock.sendall
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(100):
            send(b"x")
            recv(1)
        n += 100
        now = time.perf_counter()
        if now >= deadline:
            break
    sock.close()
    return {"transactions": n, "seconds": now - start, "rate": n / (now - start)}


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m tapveth.bench.rr")
    p.add_argument("mode", choices=["server", "client"])
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, default=5999)
    p.add_argument("--seconds", type=float, default=3.0)
    a = p.parse_args()
    if a.mode == "server":
        serve(a.host, a.port, timeout=a.seconds + 30)
    else:
        print(json.dumps(client(a.host, a.port, a.seconds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
