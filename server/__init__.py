"""MinhOS server."""

import os

# onnxruntime's Linux wheels report usage to their vendor and write a device id unless told not
# to; nothing may leave the machine at run time. Set before any module imports onnxruntime.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
