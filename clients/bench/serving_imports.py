"""Which of torch, scikit-learn and pandas a serving process imports: a MinhosServer started in a
fresh interpreter serves one Predict, then reports its ``sys.modules``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from clients.bench.inputs import Models, clean_env, scratch_database
from clients.bench.servers import SERVER_DEFAULTS

#: Modules the serving process must not load (torch, sklearn) or should not need (pandas).
FORBIDDEN = ("torch", "sklearn", "pandas")

PROBE = """
import json, sys
from pathlib import Path
import grpc
from server.core.config import load_config
from server.app import MinhosServer
from minhos.v1 import inference_pb2, inference_pb2_grpc

server = MinhosServer(load_config()).start()
try:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        request = inference_pb2.PredictRequest.FromString(Path(sys.argv[1]).read_bytes())
        inference_pb2_grpc.InferenceServiceStub(channel).Predict(request, timeout=10)
finally:
    server.stop(grace=1.0)
print(json.dumps({name: name in sys.modules for name in sys.argv[2:]}))
"""


def serving_imports(
    models: Models, scratch: Path, request: bytes, extra: dict[str, str]
) -> dict[str, bool]:
    """Each of :data:`FORBIDDEN`: whether it is in the serving interpreter's ``sys.modules``."""
    request_file = scratch / "request.bin"
    request_file.write_bytes(request)
    env = clean_env(
        {
            **SERVER_DEFAULTS,
            **extra,
            "MINHOS_SERVER_PORT": "0",
            "MINHOS_SERVER_METRICS_PORT": "0",
            "MINHOS_STORAGE_DATABASE_URL": scratch_database(models, scratch / "imports.db"),
            "MINHOS_STORAGE_MODEL_REPOSITORY": str(models.repository),
            "MINHOS_STORAGE_PERSIST": "false",
        }
    )
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(request_file), *FORBIDDEN],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        raise RuntimeError(f"import probe failed:\n{done.stderr[-2000:]}")
    found: dict[str, bool] = json.loads(done.stdout.strip().splitlines()[-1])
    return found
