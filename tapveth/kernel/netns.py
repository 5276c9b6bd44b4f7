"""Network namespaces as users name them: `ip netns` names (files under /run/netns) or PIDs.

The daemon opens a namespace only for as long as one request needs it: a held fd keeps the
namespace alive, and `ip netns del` must keep destroying it (and so the pair), as with veth.
"""

import contextlib
import ctypes
import fcntl
import os
from collections.abc import Iterator

NETNS_DIR = "/run/netns"


class NetnsError(LookupError):
    """A namespace the user named does not exist."""


def path_of(netns: str) -> str:
    if netns.isdigit():
        return f"/proc/{netns}/ns/net"
    return os.path.join(NETNS_DIR, netns)


def open_netns(netns: str) -> int:
    """Open a namespace by name (or PID) and return its fd; close it as soon as it is used."""
    try:
        return os.open(path_of(netns), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        if netns.isdigit():
            raise NetnsError(f"no process {netns}, so no namespace of it") from None
        raise NetnsError(
            f"namespace {netns!r} does not exist (create it with: ip netns add {netns})"
        ) from None
    except OSError as exc:
        raise NetnsError(f"cannot open namespace {netns!r}: {exc.strerror}") from None


def inode_of_fd(fd: int) -> int:
    return os.fstat(fd).st_ino


NS_GET_NSTYPE = 0xB703  # ioctl on a namespace fd: its CLONE_NEW* type (linux/nsfs.h)
CLONE_NEWNET = 0x40000000


def is_netns_fd(fd: int) -> bool:
    """Whether an fd (one a client sent) is a network namespace."""
    try:
        return fcntl.ioctl(fd, NS_GET_NSTYPE) == CLONE_NEWNET
    except OSError:
        return False


def own_inode() -> int:
    """The inode of the namespace this process runs in."""
    return os.stat("/proc/self/ns/net").st_ino


def inode_of_pid(pid: int) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def name_of_inode(inode: int) -> str | None:
    """The `ip netns` name bound to a namespace, or None if it has none."""
    return _names.lookup(inode)


class _NameCache:
    """inode -> name, so that naming a namespace does not stat every file in /run/netns each
    time (with a thousand namespaces that is milliseconds per call). A cached name is checked
    with one stat; any miss rescans."""

    def __init__(self) -> None:
        self._by_inode: dict[int, str] = {}

    def lookup(self, inode: int) -> str | None:
        name = self._by_inode.get(inode)
        if name is not None:
            try:
                if os.stat(os.path.join(NETNS_DIR, name)).st_ino == inode:
                    return name
            except OSError:
                pass
        self._rescan()
        return self._by_inode.get(inode)

    def _rescan(self) -> None:
        found: dict[int, str] = {}
        try:
            names = sorted(os.listdir(NETNS_DIR))
        except FileNotFoundError:
            names = []
        for name in names:
            try:
                found.setdefault(os.stat(os.path.join(NETNS_DIR, name)).st_ino, name)
            except OSError:
                continue
        self._by_inode = found


_names = _NameCache()


def mounts_propagate_out(mountinfo: str = "/proc/self/mountinfo") -> bool:
    """Whether a namespace bind-mounted under /run/netns here is seen by others: false when the
    mount holding /run/netns is a slave (`master:N`), as in a systemd unit's sandbox, whose
    own mounts never propagate back."""
    best, tags = "", [""]
    try:
        with open(mountinfo) as f:
            for line in f:
                fields = line.split()
                point = fields[4]
                holds = point == "/" or point == NETNS_DIR or NETNS_DIR.startswith(point + "/")
                if holds and len(point) >= len(best):
                    best, tags = point, fields[6 : fields.index("-")]
    except (OSError, ValueError):
        return True
    return not any(t.startswith("master:") for t in tags)


_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def entered(ns_fd: int) -> Iterator[None]:
    """Run the calling thread inside a namespace for the duration (setns is per thread).

    Only the netlink worker thread does this, and only for requests that rtnetlink cannot make
    across namespaces (qdiscs); the namespace is held for that moment only.
    """
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(ns_fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns: {os.strerror(err)}")
        try:
            yield
        finally:
            if _libc.setns(home, CLONE_NEWNET) != 0:  # never go on in the wrong namespace
                err = ctypes.get_errno()
                raise SystemExit(f"tapveth: cannot return to own namespace: {os.strerror(err)}")
    finally:
        os.close(home)


@contextlib.contextmanager
def inside(netns: str) -> Iterator[None]:
    """The calling thread inside a namespace named as `ip netns` names it (or a PID), for the
    duration only."""
    fd = open_netns(netns)
    try:
        with entered(fd):
            yield
    finally:
        os.close(fd)
