"""Per-dependency health shared by every worker: circuit breaker and rate limit in the database."""
