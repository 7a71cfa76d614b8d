"""MinhOS export."""
