"""The control socket: one JSON object per line each way, over a local stream socket.

Request: {"op": "add", "args": {...}}. Reply: {"ok": true, "result": ...} or
{"ok": false, "error": "one line for the user"}. Before replying, the daemon may ask for the
client's network namespace, {"send_fd": "netns"}; the client answers with one byte carrying an
fd of /proc/self/ns/net (SCM_RIGHTS), since a sandboxed daemon may not open another root
process's namespace by its PID. The server refuses peers that are not root,
bounds request size and the time a half-sent request may take, and never lets one client's
mistake affect another.

The clients (the CLI, the CNI plugin) use only `request` and the stream client: asyncio,
which only the daemon's side needs, is imported where that side runs, so that a client's
start-up does not pay for it (~10 MiB and tens of ms).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import grp
import json
import logging
import os
import socket
import stat
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger("tapveth")

DEFAULT_SOCKET = "/run/tapveth/tapveth.sock"
MAX_REQUEST = 64 * 1024
REQUEST_TIMEOUT = 10.0  # for a request line to arrive
REPLY_TIMEOUT = 10.0  # for a client to take its answer: one that never reads is dropped
STOPPING = "the daemon is stopping"
MAX_REPLY = 64 << 20  # stats of 1,000 pairs is about 0.5 MiB
# Asked in the middle of a request whose client names no namespace: the client answers with
# one byte carrying an fd of its network namespace (SCM_RIGHTS).
ASK_NETNS = json.dumps({"send_fd": "netns"}).encode()


class ControlError(Exception):
    """A request the daemon refused; the message is for the user, as is."""


class NoDaemon(ControlError):
    """Nothing listens on the socket."""


@dataclass(frozen=True, slots=True)
class Peer:
    pid: int
    uid: int
    gid: int
    # Asks the client for an fd of its network namespace (see ask_netns_fd); None outside a
    # connection (tests, a daemon's own requests).
    netns_fd: Callable[[], Awaitable[int]] | None = None


Handler = Callable[[str, dict[str, Any], Peer], Awaitable[Any]]
StreamRun = Callable[["asyncio.StreamReader", "asyncio.StreamWriter"], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Stream:
    """What a handler returns for a streaming request (capture, monitor): `head` goes out as
    the reply's result, then run() owns the connection until it returns, and it is closed."""

    head: Any
    run: StreamRun


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
        self._conns: set[_Conn] = set()
        self._stopping = False
        self._accepted = 0

    async def start(self) -> None:
        import asyncio

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

    async def close(self, grace: float = 10.0) -> None:
        """Stop taking connections and requests, let the requests under way finish for up to
        `grace` seconds (they see the daemon stopping and say so), answer every other client
        "the daemon is stopping", and close every connection."""
        import asyncio

        self._stopping = True
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # a new client finds no daemon, and says so
        if self._server is not None:
            # Closing the listening socket would reset the connections still queued in its
            # backlog, unanswered: accept them first (until none came for a while), so that
            # they are told the daemon is stopping.
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                seen = self._accepted
                await asyncio.sleep(0.05)
                if self._accepted == seen:
                    break
            self._server.close()  # no new connections from here on
            await asyncio.sleep(0)  # those just accepted register themselves
        # A client between requests, or whose request is not read yet, gets the answer now.
        for conn in list(self._conns):
            if not conn.busy and not conn.streaming:
                conn.answered_stop = True
                _send(conn.writer, {"ok": False, "error": STOPPING})
                if conn.writer.transport.get_write_buffer_size():
                    conn.writer.transport.abort()  # it does not read: no use waiting for it
                else:
                    conn.writer.close()
        tasks = [c.task for c in self._conns if not c.streaming]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace)
            for task in late:
                task.cancel()  # answered "stopping" by _serve itself
            await asyncio.wait(tasks, timeout=REPLY_TIMEOUT)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    async def close_streams(self, grace: float = 2.0) -> None:
        """After close() and once the streams' sources have ended them (the event bus closed):
        wait for the capture and monitor connections to finish, then cut what is left."""
        import asyncio

        tasks = [c.task for c in self._conns if c.streaming]
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=grace)
        for task in late:
            task.cancel()
        await asyncio.wait(tasks, timeout=REPLY_TIMEOUT)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import asyncio

        conn = _Conn(writer)
        self._conns.add(conn)
        self._accepted += 1
        try:
            peer = peer_of(writer.get_extra_info("socket"))
            peer = dataclasses.replace(peer, netns_fd=functools.partial(ask_netns_fd, writer))
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
                except (TimeoutError, asyncio.LimitOverrunError, ValueError):
                    await _reply(writer, {"ok": False, "error": "request too large or too slow"})
                    return
                if not line or conn.answered_stop:
                    return
                if self._stopping:
                    await _reply(writer, {"ok": False, "error": STOPPING})
                    return
                conn.busy = True
                try:
                    reply = await self._answer(line, peer)
                except asyncio.CancelledError:
                    # Shutdown gave up waiting for this request: answer it all the same.
                    _send(writer, {"ok": False, "error": STOPPING})
                    return
                stream = reply.pop("stream", None)
                # A capture or monitor owns the connection from here; shutdown ends it once
                # the pairs are gone (see close_streams), not as a request.
                conn.streaming = stream is not None
                conn.busy = False
                await _reply(writer, reply)
                if stream is not None:
                    await stream.run(reader, writer)
                    return
                if self._stopping:
                    return  # answered during the stop: the connection ends with it
        except (ConnectionError, OSError, asyncio.CancelledError):
            return
        finally:
            self._conns.discard(conn)
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(writer.wait_closed(), REPLY_TIMEOUT)

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
        except (ValueError, RecursionError):
            # ValueError: not JSON, not UTF-8, or an integer too long to convert;
            # RecursionError: nesting deeper than the parser's stack.
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
            log.exception("request %s failed", shorten(request["op"]))
            return {"ok": False, "error": f"internal error: {one_line(exc)[:200]}"}
        if isinstance(result, Stream):
            return {"ok": True, "result": result.head, "stream": result}
        return {"ok": True, "result": result}


@dataclass(eq=False)
class _Conn:
    """One client connection: its handler task, and whether a request of it is being answered."""

    writer: asyncio.StreamWriter
    task: asyncio.Task[Any] = field(init=False)
    busy: bool = False
    streaming: bool = False  # a capture or monitor: ended by close_streams()
    answered_stop: bool = False  # told "stopping" at shutdown; what it sends next is not read

    def __post_init__(self) -> None:
        import asyncio

        task = asyncio.current_task()
        assert task is not None, "a connection is served by a task"
        self.task = task


def _encode(reply: dict[str, Any]) -> bytes:
    """One reply line. Interface names may carry bytes that are not UTF-8 (kept as surrogate
    escapes): the default ensure_ascii writes them as \\u escapes, which stay valid JSON."""
    try:
        return json.dumps(reply).encode() + b"\n"
    except (TypeError, ValueError, RecursionError) as exc:
        log.error("cannot encode an answer: %s", exc)
        return (
            json.dumps({"ok": False, "error": f"internal error: {shorten(exc)}"}).encode() + b"\n"
        )


def _send(writer: asyncio.StreamWriter, reply: dict[str, Any]) -> None:
    with contextlib.suppress(Exception):
        writer.write(_encode(reply))


async def _reply(writer: asyncio.StreamWriter, reply: dict[str, Any]) -> None:
    """Write one answer; a client that does not take it within REPLY_TIMEOUT is cut off."""
    import asyncio

    writer.write(_encode(reply))
    try:
        await asyncio.wait_for(writer.drain(), REPLY_TIMEOUT)
    except TimeoutError:
        writer.transport.abort()
        raise ConnectionError("the client does not read its answers") from None


def shorten(value: object, limit: int = 64) -> str:
    """A value from a client, for a log line or an error message: at most `limit` characters."""
    text = value if isinstance(value, str) else str(value)
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} chars)"


async def ask_netns_fd(writer: asyncio.StreamWriter) -> int:
    """The client's network namespace as an fd (the caller closes it), asked for in the middle
    of a request. The transport stops reading first: a stream read would take the byte and let
    the kernel drop the fd it carries."""
    import asyncio

    transport = writer.transport
    transport.pause_reading()  # type: ignore[attr-defined]
    try:
        writer.write(ASK_NETNS + b"\n")
        await writer.drain()
        # A dup of the connection's socket for one recvmsg; the blocking wait runs off the
        # event loop, bounded as any request is.
        sock = socket.socket(fileno=os.dup(writer.get_extra_info("socket").fileno()))
        try:
            sock.settimeout(REQUEST_TIMEOUT)
            _, fds, _, _ = await asyncio.to_thread(socket.recv_fds, sock, 1, 1)
        except (TimeoutError, OSError):
            raise ControlError("the client did not send its network namespace") from None
        finally:
            sock.close()
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise ControlError("the client did not send its network namespace")
        return fds[0]
    finally:
        transport.resume_reading()  # type: ignore[attr-defined]


def send_netns_fd(sock: socket.socket) -> None:
    """Answer {"send_fd": "netns"}: one byte carrying an fd of this process's namespace."""
    fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        socket.send_fds(sock, [b"\0"], [fd])
    finally:
        os.close(fd)


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
    """Send one request and return its result; ControlError with one line for the user when
    the daemon refuses it, is not there, or does not answer as the protocol says."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    data = b""
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
        except OSError as exc:  # ENOTSOCK, ENAMETOOLONG, "AF_UNIX path too long"...
            raise NoDaemon(f"cannot reach a tapveth daemon on {path}: {one_line(exc)}") from None
        sock.sendall(json.dumps({"op": op, "args": args or {}}).encode() + b"\n")
        while True:
            while b"\n" not in data:
                chunk = sock.recv(1 << 16)
                if not chunk:
                    break
                data += chunk
                if len(data) > MAX_REPLY:
                    raise ControlError(f"the daemon on {path} sent an answer larger than 64 MiB")
            line, newline, rest = data.partition(b"\n")
            if line != ASK_NETNS:
                # One answer a request: what may follow it (a "stopping" line sent as the
                # daemon shut down) is not part of it.
                data = line + newline
                break
            data = rest
            send_netns_fd(sock)
    except TimeoutError:
        raise ControlError(f"the daemon on {path} did not answer in {timeout:.0f} s") from None
    except OSError as exc:  # EPIPE, ECONNRESET...: the daemon went away mid-request
        raise ControlError(
            f"the daemon on {path} closed the connection ({one_line(exc)})"
        ) from None
    finally:
        sock.close()
    if not data:
        raise ControlError(f"the daemon on {path} closed the connection without answering")
    if not data.endswith(b"\n"):
        raise ControlError(
            f"the daemon on {path} closed the connection in the middle of its answer"
        )
    try:
        reply = json.loads(data)
    except (ValueError, RecursionError):
        raise ControlError(f"the daemon on {path} answered something that is not JSON") from None
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        raise ControlError(f"the daemon on {path} answered something that is not a reply")
    if not reply["ok"]:
        error = reply.get("error")
        raise ControlError(
            one_line(ControlError(error))
            if isinstance(error, str) and error
            else "the daemon refused the request"
        )
    return reply.get("result")


def one_line(exc: BaseException) -> str:
    """An exception as one line for the user: its strerror, or the first line of its text."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class StreamClient:
    """The client side of a streaming request: the reply's result in `head`, then the stream's
    bytes from read(); done() half-closes so the daemon ends the stream and closes."""

    def __init__(self, path: str, op: str, args: dict[str, Any], timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            self.sock.close()
            raise NoDaemon(
                f"no tapveth daemon is listening on {path} "
                "(start one with 'tapveth daemon &' or 'systemctl start tapveth')"
            ) from None
        except PermissionError:
            self.sock.close()
            raise ControlError(f"permission denied on {path}: run as root") from None
        try:
            self.sock.sendall(json.dumps({"op": op, "args": args}).encode() + b"\n")
            data = b""
            while b"\n" not in data:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    raise ControlError(f"the daemon on {path} closed the connection")
                data += chunk
        except TimeoutError:
            self.sock.close()
            raise ControlError(f"the daemon on {path} did not answer in {timeout:.0f} s") from None
        except BaseException:
            self.sock.close()
            raise
        line, _, self._pending = data.partition(b"\n")
        reply = json.loads(line)
        if not reply.get("ok"):
            self.sock.close()
            raise ControlError(reply.get("error", "the daemon refused the request"))
        self.head: Any = reply.get("result")
        self.finish_by: float | None = None  # set by done(): the stream must end by then
        self.sock.settimeout(None)

    def read(self) -> bytes:
        """The next bytes of the stream; b"" once the daemon has closed it."""
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        return self.sock.recv(1 << 20)

    @property
    def buffered(self) -> bool:
        """read() has bytes at hand: no need to wait for the socket."""
        return bool(self._pending)

    def done(self, timeout: float = 5.0) -> None:
        """Tell the daemon to end the stream; read() then returns what is left, then b"". The
        daemon has `timeout` seconds for that (see `finish_by`)."""
        if self.finish_by is not None:
            return
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        self.finish_by = time.monotonic() + timeout

    def close(self) -> None:
        self.sock.close()
