"""Notifications: e-mail to customers over SMTP."""
