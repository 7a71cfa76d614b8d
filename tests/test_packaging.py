"""The wheel carries every package of the tree: built here, unpacked, and imported from there
(not from the checkout), down to the retraining worker's module path."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_wheel_holds_and_imports_every_package(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("minhos-*.whl")
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    packages = sorted(
        str(p.parent.relative_to(ROOT)).replace("/", ".")
        for top in ("server", "export", "clients", "dashboard")
        for p in (ROOT / top).rglob("__init__.py")
    )
    for package in packages:
        assert (site / package.replace(".", "/") / "__init__.py").is_file(), package
    modules = [*packages, "export.retrain_worker", "minhos.v1.inference_pb2"]
    probe = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    module = importlib.import_module(name)\n"
        f"    assert module.__file__.startswith({str(site)!r}), (name, module.__file__)\n"
    )
    subprocess.run(
        [sys.executable, "-c", probe],
        check=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
