"""Payments: the Paydesk adapter and the charge / refund steps."""
