"""Queue intake: orders consumed from RabbitMQ, committed in groups, acknowledged after commit."""
