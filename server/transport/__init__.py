"""Transport: the grpc.aio server on its event-loop thread (host), gRPC servicers, converters
between protos and domain types, the stream pipeline, telemetry. Imports every room below it;
nothing below imports it."""
