"""eventshop orders service."""
