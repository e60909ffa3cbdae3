"""Test support: real servers (RabbitMQ, a Mongo-wire server, SMTP), polling helpers and a
TCP proxy that cuts connections on demand. Nothing here mocks the broker or the database."""
