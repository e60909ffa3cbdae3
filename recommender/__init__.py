"""eventshop recommender service."""
