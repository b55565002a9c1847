"""Alerts: incidents opened and resolved from the system's state, told to the right people."""
