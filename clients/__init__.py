"""MinhOS clients."""
