"""Shipping: the carrier adapter, its vocabulary, webhooks and the booking / tracking steps."""
