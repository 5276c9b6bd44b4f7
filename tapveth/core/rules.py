"""The veth rules, without I/O: which frames cross, when the carrier is on, and what is counted.

These mirror drivers/net/veth.c (veth_xmit, veth_open/veth_close) and the kernel's
__is_skb_forwardable(); the relay and the daemon only feed them facts and act on the answers.
"""

import errno
from dataclasses import dataclass, field
from enum import StrEnum

ETH_HLEN = 14
VLAN_HLEN = 4
# Range a TAP accepts (the kernel veth goes to 65535, a TAP stops at 65521).
MIN_MTU = 68
MAX_MTU = 65521
DEFAULT_MTU = 1500


class DropReason(StrEnum):
    """Why the relay refused a frame: each counts tx_dropped on the sender, and all but
    PEER_DOWN also rx_dropped on the peer."""

    MTU = "mtu"  # longer than the receiver's MTU + 18 and not a GSO super-frame
    PEER_DOWN = "peer_down"  # receiving end is admin-down
    RUNT = "runt"  # shorter than an Ethernet header
    INVALID_HEADER = "invalid_header"  # the receiving TAP refused the virtio header (EINVAL)
    WRITE_ERROR = "write_error"  # any other error writing to the receiving TAP
    # Impairments (tapveth qdisc ... netem), decided before the veth rules:
    LOSS = "loss"  # a loss model said so
    QUEUE = "queue"  # the impairment queue was full (its limit)
    CORRUPT = "corrupt"  # a GSO super-frame picked for corruption (see core/impair.py)
    CARRIER = "carrier"  # the link's carrier is cut (tapveth link set … carrier off)


# What a TAP's fd answers once its device is gone (deleted, or its namespace destroyed) or
# the fd is unusable: the end is lost, not one frame refused. _native_relay.c's fatal_errno()
# is the same set.
TAP_GONE = frozenset({errno.EBADFD, errno.EBADF, errno.EFAULT, errno.ENODEV, errno.EPIPE})


def write_refusal(err: int | None) -> DropReason | None:
    """What a TAP's refusal of a frame's write (errno `err`) means for that frame; None when
    the TAP is gone (TAP_GONE), which the caller handles as a lost end."""
    if err == errno.EIO:
        return DropReason.PEER_DOWN  # tun refuses writes to an admin-down device
    if err == errno.EINVAL:
        return DropReason.INVALID_HEADER  # the virtio header was refused
    if err in TAP_GONE:
        return None
    return DropReason.WRITE_ERROR


def max_frame_len(mtu: int) -> int:
    """Longest non-GSO frame veth forwards to a device of this MTU: header plus one VLAN tag."""
    return mtu + ETH_HLEN + VLAN_HLEN


def admit(frame_len: int, gso: bool, peer_up: bool, peer_mtu: int) -> DropReason | None:
    """Decide one frame as veth_xmit does: None to forward it, else the reason it is dropped.

    frame_len is the whole Ethernet frame without the virtio header. GSO super-frames skip the
    length check (is_skb_forwardable() tests skb_is_gso() first); runts never reach veth in the
    kernel because the sender's socket refuses them, so the check order here does not matter.
    """
    if frame_len < ETH_HLEN:
        return DropReason.RUNT
    if not peer_up:
        return DropReason.PEER_DOWN
    if not gso and frame_len > peer_mtu + ETH_HLEN + VLAN_HLEN:
        return DropReason.MTU
    return None


def carrier(up_a: bool, up_b: bool) -> bool:
    """veth's carrier rule: both ends have carrier iff both are admin-up."""
    return up_a and up_b


@dataclass(slots=True)
class Carrier:
    """Carrier of a pair (always the same on both ends) and its transition counters.

    A new pair starts with carrier off and one down transition counted, as veth_newlink's
    netif_carrier_off() does on a fresh device (and a TAP opened with IFF_NO_CARRIER).
    """

    on: bool = False
    changes: int = 1
    cut: bool = False  # a fault: carrier off on both ends whatever their admin state

    def update(self, up_a: bool, up_b: bool) -> bool:
        """Apply the rule to the ends' admin states; True when the carrier must be switched."""
        want = carrier(up_a, up_b) and not self.cut
        if want == self.on:
            return False
        self.on = want
        self.changes += 1
        return True

    @property
    def up_count(self) -> int:
        return self.changes // 2

    @property
    def down_count(self) -> int:
        return (self.changes + 1) // 2


@dataclass(slots=True)
class Flow:
    """Counters of one direction of a pair: the sender's tx and the receiver's rx are the same
    numbers, as in veth_get_stats64, so they are stored once."""

    packets: int = 0
    bytes: int = 0
    dropped: int = 0
    drops: dict[DropReason, int] = field(default_factory=dict)
    # Refusals the receiving TAP also counted in its own rx_dropped (a write that failed with
    # EIO): left out when the kernel's counters are added, so no frame counts twice.
    peer_counted: int = 0

    def forwarded(self, frame_len: int) -> None:
        self.packets += 1
        self.bytes += frame_len

    def refused(self, reason: DropReason) -> None:
        self.dropped += 1
        self.drops[reason] = self.drops.get(reason, 0) + 1

    @property
    def receiver_dropped(self) -> int:
        """Refusals veth also counts in the receiver's rx_dropped. Not PEER_DOWN: when an end
        goes down, veth takes the carrier from its peer at once and the peer's queue stops,
        so what the peer sends next is dropped before the pair sees it, on the sender alone.
        A TAP's queue stops only when the kernel's (rate-limited) linkwatch gets to it, up to
        a second later; until then such frames reach the relay, and count as veth's would."""
        return self.dropped - self.drops.get(DropReason.PEER_DOWN, 0)


@dataclass(frozen=True, slots=True)
class EndCounters:
    """One end's counters in veth's meaning, derived from the two flows of its pair."""

    rx_packets: int
    rx_bytes: int
    tx_packets: int
    tx_bytes: int
    rx_dropped: int
    tx_dropped: int
    drops: dict[str, int]

    @classmethod
    def of(
        cls, outgoing: Flow, incoming: Flow, kernel_drops: tuple[int, int] | None = None
    ) -> "EndCounters":
        """kernel_drops: the (rx_dropped, tx_dropped) the kernel counted on this end's TAP:
        frames lost before the relay saw them (qdisc drops without carrier, ring overflow) or
        after it delivered them (no handler in the stack). veth counts those too."""
        rx_dropped, tx_dropped = incoming.receiver_dropped, outgoing.dropped
        if kernel_drops is not None:
            rx_dropped += max(0, kernel_drops[0] - incoming.peer_counted)
            tx_dropped += kernel_drops[1]
        return cls(
            rx_packets=incoming.packets,
            rx_bytes=incoming.bytes,
            tx_packets=outgoing.packets,
            tx_bytes=outgoing.bytes,
            rx_dropped=rx_dropped,
            tx_dropped=tx_dropped,
            drops={str(k): v for k, v in sorted(outgoing.drops.items())},
        )
