"""Serving: the transport-free data plane (validate, score, record), the stream session, the
hot-swapped model set and prediction ids. Imports server.core and server.storage."""
