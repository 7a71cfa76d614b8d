"""Storage: the peewee tables (schema.py), the batched writer, the model registry (files plus
rows), jobs, and the reads. Imports server.core only."""
