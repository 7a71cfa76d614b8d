"""Transport: gRPC servicers, converters between protos and domain types, the stream pipeline,
telemetry. Imports every room below it; nothing below imports it."""
