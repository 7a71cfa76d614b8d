"""Retraining: the coordinator (schedules, triggers, the worker process, probation, rollback)
and its pure rules. Imports server.core, server.storage and server.monitoring."""
