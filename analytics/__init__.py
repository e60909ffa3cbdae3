"""eventshop analytics service."""
