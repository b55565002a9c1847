"""Customers and products: who orders, and what they can order."""
