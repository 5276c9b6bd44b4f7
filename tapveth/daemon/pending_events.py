"""Link events queued on the netlink socket, applied before a batch of frames.

An event queued before a frame was sent (an MTU change, a peer going down) must apply to it:
the kernel veth sees such changes at once. So each batch asks the kernel first, with a poll()
that does not wait, and applies the events only if the socket holds some. The poll is still a
system call, but a short path through Python, no buffer and no exception: the first frame
after idle runs on cold caches, where the draining read that finds nothing cost ~40 us and
the poll ~15 us (README).
"""

import select
from collections.abc import Callable


class PendingEvents:
    """A daemon's queued link events: the check before a batch, and the callback that applies
    them. The relay's plain path inlines apply_if_queued() (one call per batch)."""

    __slots__ = ("apply", "poll")

    def __init__(self, apply: Callable[[], None], fd: int | None = None) -> None:
        """apply: drain the events' socket and apply what it held. fd: that socket; without
        it, every batch calls apply."""
        self.apply = apply
        # The poller's bound poll(), asked with a timeout of 0: a list, empty when nothing waits.
        self.poll: Callable[[int], list[tuple[int, int]]] | None = None
        if fd is not None:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            self.poll = poller.poll

    def apply_if_queued(self) -> None:
        """Apply the link events queued now, if the kernel holds any."""
        poll = self.poll
        if poll is None or poll(0):
            self.apply()
