"""``make bench``: MinhOS against servers that do strictly less, in one run, with the targets of
issue 10 printed as PASS/FAIL.

Modules: settings (what a run measures), inputs (models, request bytes), controls (what the
stand-in servers do), servers (every server process), floor (DataPlane.predict in process),
measure (interleaved latency, stream CPU), load (closed-loop clients in their own process), oip
(ModelInfer beside Predict), serving_imports, procfs, goals (the targets), report (rows and
formatting), run (the sequence and the command line).
"""

from clients.bench.inputs import Models, train_models
from clients.bench.oip import model_infer_request, oip_beside_predict
from clients.bench.report import Check, Report, Row, format_report
from clients.bench.run import main, run
from clients.bench.servers import ServerProcess, free_port, real_server
from clients.bench.settings import Settings

__all__ = [
    "Check",
    "Models",
    "Report",
    "Row",
    "ServerProcess",
    "Settings",
    "format_report",
    "free_port",
    "main",
    "model_infer_request",
    "oip_beside_predict",
    "real_server",
    "run",
    "train_models",
]
