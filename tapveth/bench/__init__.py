"""Benchmarks that measure tapveth and the kernel veth side by side, in the same run."""
