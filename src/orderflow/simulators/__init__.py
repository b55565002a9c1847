"""Simulators of the outside world (Bob's Post, Paydesk, an SMTP mail sink) for demo and tests."""
