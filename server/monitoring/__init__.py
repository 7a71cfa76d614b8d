"""Monitoring: the monitor façade over health scoring, alert rules and the alert store,
degradation (CUSUM) and trends. Imports server.core and server.storage."""
