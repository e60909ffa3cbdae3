"""eventshop's shared kernel: event contracts, the RabbitMQ bus, outbox, inbox, RPC, the
process runtime and logging. It knows no service; every service builds on it."""
