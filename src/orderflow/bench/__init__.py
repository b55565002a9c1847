"""Load benchmarks run against a deployment (`orderflow bench`)."""
