"""Thin layers over the kernel: TAP devices, namespaces, rtnetlink requests and link events."""
