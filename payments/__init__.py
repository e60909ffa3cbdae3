"""eventshop payments service."""
