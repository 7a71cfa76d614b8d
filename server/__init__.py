"""MinhOS server."""
