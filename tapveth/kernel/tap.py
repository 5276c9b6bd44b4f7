"""One TAP device end: opening it with the flags a veth end needs, and the ioctls the daemon uses.

Only fd-based calls are used once the device may have moved: pytun's name-based helpers act in
the caller's namespace and would hit the wrong device (or none) after `ip link set … netns`.
"""

import ctypes
import errno
import fcntl
import os
import socket
import struct

import pytun

from tapveth.core import vnet
from tapveth.core.ifname import decode as decode_ifname

TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNGETIFF = 0x800454D2
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
TUNSETCARRIER = 0x400454E2
TUNGETDEVNETNS = 0x54E3

IFF_TAP = 0x0002
IFF_NO_CARRIER = 0x0040
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
IFF_TUN_EXCL = 0x8000

TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
TUN_F_USO4 = 0x20
TUN_F_USO6 = 0x40
TUN_F_UDP_TUNNEL_GSO = 0x80
TUN_F_UDP_TUNNEL_GSO_CSUM = 0x100

# What veth offers by default (checksum, SG, TSO/TSO6, GSO, UDP segmentation, UDP-tunnel
# segmentation with and without outer checksum), as TAP offloads, best first: USO4 and USO6
# must be set together, and kernels without USO (before 6.2) or UDP-tunnel offload (before
# 6.17) refuse the bits they do not know with EINVAL.
OFFLOADS = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN
OFFLOADS_USO = OFFLOADS | TUN_F_USO4 | TUN_F_USO6
OFFLOADS_TUNNEL = OFFLOADS_USO | TUN_F_UDP_TUNNEL_GSO | TUN_F_UDP_TUNNEL_GSO_CSUM

OPEN_FLAGS = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_NO_CARRIER | IFF_TUN_EXCL

# Device features veth has by default and a TAP can take too (`ethtool -K` at creation): no
# GRO (veth has none without XDP), TSO allowed to mangle IP ids. What a TAP cannot take is
# listed in README's differences.
VETH_FEATURES = {"rx-gro": False, "tx-tcp-mangleid-segmentation": True}

SIOCETHTOOL = 0x8946
ETHTOOL_GSTRINGS = 0x1B
ETHTOOL_GSSET_INFO = 0x37
ETHTOOL_SFEATURES = 0x3B
ETH_SS_FEATURES = 4
ETH_GSTRING_LEN = 32


class TapError(OSError):
    """A TAP could not be made; errno says why (EBUSY: the name is taken)."""


class Tap:
    """An open TAP device: the fd stays valid across namespace moves and renames."""

    def __init__(self, name: str, reattach: bool = False) -> None:
        """Create a TAP named `name`; with reattach, attach to an existing persistent one
        (the caller must be inside its namespace, or a new TAP is made where it stands)."""
        # IFF_NO_CARRIER: no end shows LOWER_UP before its peer exists (also on re-attach).
        # IFF_TUN_EXCL: never attach silently to someone else's TAP of the same name.
        flags = OPEN_FLAGS & ~IFF_TUN_EXCL if reattach else OPEN_FLAGS
        try:
            self._dev = pytun.TunTapDevice(name=name, flags=flags)
        except pytun.Error as exc:
            code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else errno.EIO
            if code == errno.EBUSY:
                raise TapError(code, f"interface name {name!r} is already taken") from None
            raise TapError(code, f"cannot create TAP {name!r}: {os.strerror(code)}") from None
        self.fd: int = self._dev.fileno()
        try:
            os.set_blocking(self.fd, False)
            fcntl.ioctl(self.fd, TUNSETVNETHDRSZ, struct.pack("i", vnet.HDR_LEN))
            self.offloads = self._set_offloads()
            if not reattach:  # a re-attached TAP kept what it was given when it was made
                set_features(name, VETH_FEATURES)
        except BaseException:
            self._dev.close()
            raise
        self.closed = False

    def _set_offloads(self) -> int:
        """The best offloads this kernel accepts, of those veth has."""
        for offloads in (OFFLOADS_TUNNEL, OFFLOADS_USO):
            try:
                fcntl.ioctl(self.fd, TUNSETOFFLOAD, offloads)
                return offloads
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
        fcntl.ioctl(self.fd, TUNSETOFFLOAD, OFFLOADS)
        return OFFLOADS

    def set_carrier(self, on: bool) -> None:
        # TUNSETCARRIER takes a pointer to an int: passing the value itself gives EFAULT.
        fcntl.ioctl(self.fd, TUNSETCARRIER, struct.pack("i", 1 if on else 0))

    def set_offloads(self, flags: int) -> None:
        """Change what the TAP offers the stack (TUN_F_*). 0 makes the kernel hand over only
        wire-sized frames with complete checksums: no TSO super-frames, no partial checksums."""
        fcntl.ioctl(self.fd, TUNSETOFFLOAD, flags)
        self.offloads = flags

    def set_persist(self, on: bool) -> None:
        fcntl.ioctl(self.fd, TUNSETPERSIST, 1 if on else 0)

    def ifname(self) -> str:
        """The device's current name (follows renames). EBADFD once the device is gone.
        Bytes that are not UTF-8 are kept as surrogates, so the name still compares equal."""
        res = fcntl.ioctl(self.fd, TUNGETIFF, bytes(40))
        return decode_ifname(res[:16].split(b"\0", 1)[0])

    def gone(self) -> bool:
        """True once the kernel has unregistered the device: tun detaches every fd from it,
        and TUNGETIFF then fails with EBADFD. The only proof that an end was deleted; a
        lookup that finds nothing may just have raced with a move or a rename."""
        try:
            fcntl.ioctl(self.fd, TUNGETIFF, bytes(40))
        except OSError as exc:
            return exc.errno in (errno.EBADFD, errno.EBADF)
        return False

    def netns_fd(self) -> int:
        """A new fd of the namespace the device lives in now; the caller must close it soon,
        since holding it keeps that namespace alive."""
        return fcntl.ioctl(self.fd, TUNGETDEVNETNS)

    def close(self) -> None:
        """Close the fd; a non-persistent TAP is then deleted by the kernel."""
        if not self.closed:
            self.closed = True
            self._dev.close()


def set_features(ifname: str, wanted: dict[str, bool]) -> None:
    """`ethtool -K IFNAME feature on|off …` for a device in the calling thread's namespace,
    with the ethtool ioctl. It goes through an AF_UNIX socket (the kernel hands any socket's
    unknown ioctl to the device layer): the daemon opens no IP or packet socket, and its
    sandbox allows only AF_UNIX and AF_NETLINK (pyroute2's ethtool ioctls use AF_INET)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        names = _feature_names(sock, ifname)
        blocks = (len(names) + 31) // 32
        cmd = ctypes.create_string_buffer(8 + 8 * blocks)
        struct.pack_into("II", cmd, 0, ETHTOOL_SFEATURES, blocks)
        for feature, on in wanted.items():
            if feature not in names:
                continue  # unknown to this kernel
            bit = names.index(feature)
            at = 8 + 8 * (bit // 32)
            valid, requested = struct.unpack_from("II", cmd, at)
            valid |= 1 << (bit % 32)
            requested = requested | (1 << (bit % 32)) if on else requested
            struct.pack_into("II", cmd, at, valid, requested)
        # A positive answer (ETHTOOL_F_WISH/UNSUPPORTED) means some could not be set: the
        # device keeps its own value for those, which is all a TAP can do.
        _ethtool(sock, ifname, cmd)


_names_cache: list[str] = []


def _feature_names(sock: socket.socket, ifname: str) -> list[str]:
    """The kernel's names of device features, in bit order (ETH_SS_FEATURES): the same for
    every device of a running kernel, so they are asked for once (two ioctls a TAP less)."""
    if not _names_cache:
        _names_cache.extend(_ask_feature_names(sock, ifname))
    return _names_cache


def _ask_feature_names(sock: socket.socket, ifname: str) -> list[str]:
    info = ctypes.create_string_buffer(20)
    struct.pack_into("IIQ", info, 0, ETHTOOL_GSSET_INFO, 0, 1 << ETH_SS_FEATURES)
    _ethtool(sock, ifname, info)
    (count,) = struct.unpack_from("I", info, 16)
    strings = ctypes.create_string_buffer(12 + count * ETH_GSTRING_LEN)
    struct.pack_into("III", strings, 0, ETHTOOL_GSTRINGS, ETH_SS_FEATURES, count)
    _ethtool(sock, ifname, strings)
    raw = strings.raw[12:]
    return [
        raw[i * ETH_GSTRING_LEN : (i + 1) * ETH_GSTRING_LEN].split(b"\0", 1)[0].decode()
        for i in range(count)
    ]


def _ethtool(sock: socket.socket, ifname: str, cmd: ctypes.Array[ctypes.c_char]) -> int:
    """One SIOCETHTOOL: an ifreq naming the device, whose data points at cmd."""
    ifreq = struct.pack("16sP16x", ifname.encode(errors="surrogateescape"), ctypes.addressof(cmd))
    return int(fcntl.ioctl(sock.fileno(), SIOCETHTOOL, bytearray(ifreq), True))
