"""eventshop notifier service."""
