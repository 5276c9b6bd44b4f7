"""One TAP device end: opening it with the flags a veth end needs, and the ioctls the daemon uses.

Only fd-based calls are used once the device may have moved: pytun's name-based helpers act in
the caller's namespace and would hit the wrong device (or none) after `ip link set … netns`.
"""

import errno
import fcntl
import os
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

# What veth offers by default (checksum, SG, TSO/TSO6, GSO, UDP segmentation), as TAP offloads.
# USO4 and USO6 must be set together; kernels without USO refuse them with EINVAL.
OFFLOADS = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN
OFFLOADS_USO = OFFLOADS | TUN_F_USO4 | TUN_F_USO6

OPEN_FLAGS = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_NO_CARRIER | IFF_TUN_EXCL


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
            try:
                fcntl.ioctl(self.fd, TUNSETOFFLOAD, OFFLOADS_USO)
                self.offloads = OFFLOADS_USO
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                fcntl.ioctl(self.fd, TUNSETOFFLOAD, OFFLOADS)
                self.offloads = OFFLOADS
        except BaseException:
            self._dev.close()
            raise
        self.closed = False

    def set_carrier(self, on: bool) -> None:
        # TUNSETCARRIER takes a pointer to an int: passing the value itself gives EFAULT.
        fcntl.ioctl(self.fd, TUNSETCARRIER, struct.pack("i", 1 if on else 0))

    def set_persist(self, on: bool) -> None:
        fcntl.ioctl(self.fd, TUNSETPERSIST, 1 if on else 0)

    def ifname(self) -> str:
        """The device's current name (follows renames). EBADFD once the device is gone."""
        res = fcntl.ioctl(self.fd, TUNGETIFF, bytes(40))
        return decode_ifname(res[:16].split(b"\0", 1)[0])

    def netns_fd(self) -> int:
        """A new fd of the namespace the device lives in now; the caller must close it soon,
        since holding it keeps that namespace alive."""
        return fcntl.ioctl(self.fd, TUNGETDEVNETNS)

    def close(self) -> None:
        """Close the fd; a non-persistent TAP is then deleted by the kernel."""
        if not self.closed:
            self.closed = True
            self._dev.close()
