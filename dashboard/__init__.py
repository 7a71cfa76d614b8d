"""MinhOS dashboard."""
