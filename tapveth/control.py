"""The control socket: one JSON object per line each way, over a local stream socket.

Request: {"op": "add", "args": {...}}. Reply: {"ok": true, "result": ...} or
{"ok": false, "error": "one line for the user"}. The server refuses peers that are not root,
bounds request size and the time a half-sent request may take, and never lets one client's
mistake affect another.
"""

import asyncio
import contextlib
import errno
import grp
import json
import logging
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("tapveth")

DEFAULT_SOCKET = "/run/tapveth/tapveth.sock"
MAX_REQUEST = 64 * 1024
REQUEST_TIMEOUT = 10.0


class ControlError(Exception):
    """A request the daemon refused; the message is for the user, as is."""


class NoDaemon(ControlError):
    """Nothing listens on the socket."""


@dataclass(frozen=True, slots=True)
class Peer:
    pid: int
    uid: int
    gid: int


Handler = Callable[[str, dict[str, Any], Peer], Awaitable[Any]]


def socket_path(cli_value: str | None) -> str:
    """--socket, else $TAPVETH_SOCKET, else the default."""
    return cli_value or os.environ.get("TAPVETH_SOCKET") or DEFAULT_SOCKET


def peer_of(sock: Any) -> Peer:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return Peer(pid, uid, gid)


class ControlServer:
    """Serves requests on a Unix stream socket until closed: mode 0600 for root only, or 0660
    owned by a group whose members may also control the daemon."""

    def __init__(self, path: str, handler: Handler, group: str | None = None) -> None:
        self.path = path
        self._handler = handler
        self._group = group
        self._gid: int | None = None
        if group is not None:
            try:
                self._gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise ControlError(
                    f"no group named {group!r} (create it with: groupadd {group})"
                ) from None
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        _claim_socket_path(self.path)
        old = os.umask(0o177)  # the socket is created 0600: only root may talk to the daemon
        try:
            # A deep backlog: a burst of clients (a script adding pairs in parallel) is queued,
            # not refused with EAGAIN.
            self._server = await asyncio.start_unix_server(
                self._serve, path=self.path, limit=MAX_REQUEST, backlog=1024
            )
        finally:
            os.umask(old)
        if self._gid is None:
            os.chmod(self.path, 0o600)
        else:
            os.chown(self.path, 0, self._gid)
            os.chmod(self.path, 0o660)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            peer = peer_of(writer.get_extra_info("socket"))
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
                except (TimeoutError, asyncio.LimitOverrunError, ValueError):
                    await _reply(writer, {"ok": False, "error": "request too large or too slow"})
                    return
                if not line:
                    return
                reply = await self._answer(line, peer)
                await _reply(writer, reply)
        except (ConnectionError, OSError):
            return
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _allowed(self, peer: Peer) -> bool:
        if peer.uid == 0:
            return True
        if self._gid is None:
            return False
        return peer.gid == self._gid or self._gid in _supplementary_groups(peer.pid)

    async def _answer(self, line: bytes, peer: Peer) -> dict[str, Any]:
        if not self._allowed(peer):
            who = "root" if self._group is None else f"root or members of group {self._group}"
            return {"ok": False, "error": f"permission denied: only {who} may control tapveth"}
        try:
            request = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {"ok": False, "error": "malformed request (expected one JSON object a line)"}
        if (
            not isinstance(request, dict)
            or not isinstance(request.get("op"), str)
            or not isinstance(request.get("args", {}), dict)
        ):
            return {"ok": False, "error": "malformed request (needs 'op' and 'args')"}
        try:
            result = await self._handler(request["op"], request.get("args", {}), peer)
        except ControlError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # a bug or an unforeseen failure: say so, keep serving
            log.exception("request %r failed", request.get("op"))
            return {"ok": False, "error": f"internal error: {exc}"}
        return {"ok": True, "result": result}


async def _reply(writer: asyncio.StreamWriter, reply: dict[str, Any]) -> None:
    writer.write(json.dumps(reply).encode() + b"\n")
    await writer.drain()


def _supplementary_groups(pid: int) -> set[int]:
    """The peer's supplementary groups (SO_PEERCRED gives only its primary gid)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Groups:"):
                    return {int(g) for g in line.split()[1:]}
    except OSError:
        pass
    return set()


def _claim_socket_path(path: str) -> None:
    """Make the socket's directory; remove a stale socket, refuse to steal a live one."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # left by a daemon that died
        return
    finally:
        probe.close()
    raise ControlError(f"a tapveth daemon is already listening on {path}")


def request(path: str, op: str, args: dict[str, Any] | None = None, timeout: float = 60.0) -> Any:
    """Send one request and return its result; ControlError with the daemon's message if refused."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise NoDaemon(
                f"no tapveth daemon is listening on {path} "
                "(start one with 'tapveth daemon &' or 'systemctl start tapveth')"
            ) from None
        except PermissionError:
            raise ControlError(f"permission denied on {path}: run as root") from None
        sock.sendall(json.dumps({"op": op, "args": args or {}}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        raise ControlError(f"the daemon on {path} did not answer in {timeout:.0f} s") from None
    except OSError as exc:
        if exc.errno == errno.ECONNRESET:
            raise ControlError(f"the daemon on {path} closed the connection") from None
        raise
    finally:
        sock.close()
    if not data:
        raise ControlError(f"the daemon on {path} closed the connection without answering")
    reply = json.loads(data)
    if not reply.get("ok"):
        raise ControlError(reply.get("error", "the daemon refused the request"))
    return reply.get("result")


def one_line(exc: BaseException) -> str:
    """An exception as one line for the user: its strerror, or the first line of its text."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
