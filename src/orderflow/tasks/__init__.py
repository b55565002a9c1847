"""Durable work: the task table, its claim/lease/retry lifecycle, and the worker loop."""
