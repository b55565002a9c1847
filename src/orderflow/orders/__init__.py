"""Orders: the lifecycle, the tables, the use cases and the read models."""
