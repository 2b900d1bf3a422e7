"""geartrain: a Gearman job server, client and worker library, and tools."""

__version__ = "0.1.0"
