"""The HTTP side: JSON API, carrier webhooks, health checks and the admin console."""
