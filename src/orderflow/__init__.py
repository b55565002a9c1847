"""orderflow: fault-tolerant order fulfilment."""

__version__ = "0.1.0"
