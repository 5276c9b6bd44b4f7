"""A CNI plugin that gives containers tapveth pairs where runtimes would use a veth."""
