"""The BFD session of a vxlan end (RFC 5880 over VXLAN, RFC 8971): its timer on the event loop,
its control packets into the tunnel, and those the receive path hands it.

The session's rules are core/bfd.py; this module only drives it with time and packets.
"""

import asyncio
import logging
import os
import random
import secrets
import socket
from collections.abc import Callable

from tapveth.core import bfd, vxlan
from tapveth.core.vxlanspec import VxlanSpec

log = logging.getLogger("tapveth")


class BfdLink:
    """One end's BFD session, driven: sent from the first socket of the pool, its state
    changes reported through on_change (the carrier follows them)."""

    def __init__(
        self,
        spec: VxlanSpec,
        loop: asyncio.AbstractEventLoop,
        tx_fd: int,
        vxhdr: bytes,
        local_ip: str,
        admin_down: bool,
        on_change: Callable[[], None],
    ) -> None:
        self._spec = spec
        self._loop: asyncio.AbstractEventLoop | None = loop
        self._tx_fd = tx_fd
        self._vxhdr = vxhdr
        self._mac = bytes([0x02]) + secrets.token_bytes(5)
        try:
            self._ip = socket.inet_aton(local_ip)
        except OSError:
            self._ip = socket.inet_aton("127.0.0.1")  # IPv6 underlay: inner IPv4 anyway
        self._on_change = on_change
        self._timer: asyncio.TimerHandle | None = None
        interval = spec.bfd_interval_ms * 1000
        self.session = bfd.Session(
            secrets.randbits(32) or 1,
            random.Random(secrets.randbits(64)),
            loop.time(),
            tx_interval_us=interval,
            rx_interval_us=interval,
            detect_mult=spec.bfd_multiplier,
        )
        self.session.set_admin_down(admin_down, loop.time())
        self._tick()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._loop = None

    def local_admin(self, up: bool) -> None:
        """The TAP end was set up or down: tell the far side (AdminDown)."""
        if self._loop is not None and self.session.set_admin_down(not up, self._loop.time()):
            self._changed()

    def _tick(self) -> None:
        self._timer = None
        if self._loop is None:
            return
        packets, changed = self.session.due(self._loop.time())
        for pkt in packets:
            self._send(pkt)
        if changed:
            self._changed()
        if self._loop is not None:
            self._timer = self._loop.call_at(self.session.next_deadline(), self._tick)

    def _send(self, control: bytes) -> None:
        frame = vxlan.bfd_frame(self._mac, self._ip, control)
        try:
            os.writev(self._tx_fd, [self._vxhdr, frame])
        except OSError as exc:
            log.debug("bfd to %s: %s", self._spec.remote, exc)  # an unreachable far side

    def receive(self, frame: memoryview) -> bool:
        """A frame addressed to the BFD MAC came through the tunnel; False when it is not a
        valid control packet (the caller counts it)."""
        if self._loop is None:
            return True
        payload = vxlan.bfd_payload(frame)
        if payload is None:
            return False
        try:
            changed = self.session.receive(payload, self._loop.time())
        except bfd.BfdError as exc:
            log.debug("bfd from %s discarded: %s", self._spec.remote, exc)
            return False
        if changed:
            self._changed()
        # A Final is due at once; other changes wait for the transmission timer (6.8.7).
        if self._timer is not None:
            self._timer.cancel()
        self._tick()
        return True

    def _changed(self) -> None:
        s = self.session
        log.info(
            "vxlan %s to %s: bfd %s (diag %s, remote %s)",
            self._spec.vni,
            self._spec.remote,
            s.state.name,
            s.diag.name,
            s.remote_state.name,
        )
        self._on_change()
