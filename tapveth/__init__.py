"""tapveth: the Linux veth pair rebuilt in userspace on two TAP devices."""

__version__ = "0.1.0"
