"""eventshop users service."""
