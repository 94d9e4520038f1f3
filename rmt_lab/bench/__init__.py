"""Benchmarks: FLOPs, memory and speed of the RMT against full attention."""
