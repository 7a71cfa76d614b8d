"""The container images (deploy/Dockerfile): docker itself, a local base, the wheels and the builds;
shared by ``make docker``, ``make image`` and tests/test_image.py.

Built without a registry or pip inside the build: pip there cannot verify TLS (the host trusts a CA
a fresh image lacks), and here no image can be pulled. So the base is Debian bookworm from
debootstrap, imported as :data:`LOCAL_BASE`; every wheel is downloaded on the host for the image's
Python and platform (never built from an sdist), pinned to this environment's versions so that the
image serves with exactly what the tests ran; the Dockerfile installs them with ``--no-index``.
Elsewhere, ``--base python:3.11-slim-bookworm`` builds from the public slim image instead.

``python -m clients.image [docker | base | build [IMAGE ...] [--base IMAGE]]``
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
#: Wheels, the staged build context and the locks; under build/ (ignored by git).
WORK = ROOT / "build" / "image"
#: What the Dockerfile copies (the only path .dockerignore lets into the context).
CONTEXT = WORK / "context"
#: Debian bookworm from debootstrap (python3 3.11, venv, CA certificates): :func:`ensure_base`.
LOCAL_BASE = "minhos-base:bookworm"
#: The base anywhere a registry is reachable (the Dockerfile's default).
PUBLIC_BASE = "python:3.11-slim-bookworm"
#: The bases' Python: the wheels are downloaded for it, whatever Python runs this module.
PYTHON = "3.11"
#: Bookworm's glibc: wheels tagged manylinux_2_17 up to this run there.
GLIBC_MINOR = 36
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DOCKERD_LOG = Path("/var/log/minhos-dockerd.log")
DOCKER_START_S = 30.0
#: Bounds on the slow steps, so that a hung mirror or daemon fails instead of hanging.
DEBOOTSTRAP_S = 900
DOWNLOAD_S = 900
BUILD_S = 1800


@dataclass(frozen=True)
class Image:
    #: The Dockerfile's --target.
    target: str
    #: Repository name of the tags (``NAME:VERSION`` and ``NAME:latest``).
    name: str
    #: The package's extras installed beside its dependencies.
    extras: str
    #: Imports that must work inside the image, and modules that must not be found there.
    imports: tuple[str, ...]
    absent: tuple[str, ...] = ()


IMAGES: dict[str, Image] = {
    image.target: image
    for image in (
        Image(
            "serving",
            "minhos-serving",
            "postgres",
            imports=("server.app", "server.main", "psycopg2", "onnxruntime"),
            absent=("torch", "sklearn", "pandas", "arch"),
        ),
        Image(
            "worker",
            "minhos-worker",
            "train,postgres",
            imports=("server.worker", "export.train", "torch", "sklearn", "psycopg2"),
        ),
        Image("dashboard", "minhos-dashboard", "dashboard", imports=("dashboard.app",)),
    )
}


class DockerUnavailable(RuntimeError):
    """docker cannot be used here (not installed and not installable, or the daemon will not
    start)."""


@dataclass(frozen=True)
class Built:
    image: Image
    tags: tuple[str, ...]
    seconds: float
    size_bytes: int

    @property
    def tag(self) -> str:
        return self.tags[0]

    @property
    def size_mb(self) -> float:
        return self.size_bytes / 1e6


def version() -> str:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return str(tomllib.load(fh)["project"]["version"])


def tags(image: Image) -> tuple[str, str]:
    return f"{image.name}:{version()}", f"{image.name}:latest"


def revision() -> str:
    done = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty", "--abbrev=12"],
        capture_output=True,
        text=True,
    )
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def _run(
    argv: Sequence[str],
    timeout: float,
    env: dict[str, str] | None = None,
    stdin: IO[bytes] | None = None,
) -> str:
    done = subprocess.run(
        list(argv), capture_output=True, timeout=timeout, env=env, stdin=stdin, check=False
    )
    if done.returncode != 0:
        output = (done.stdout + done.stderr).decode(errors="replace").strip()[-4000:]
        raise RuntimeError(f"{' '.join(argv[:4])} ... failed ({done.returncode}):\n{output}")
    return done.stdout.decode(errors="replace")


# --- docker ---------------------------------------------------------------------------------------


def docker_ready() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=20)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def apt_install(*packages: str) -> None:
    """Debian packages, as root; waits for another apt to finish rather than failing on its lock."""
    if os.geteuid() != 0:
        raise DockerUnavailable(f"installing {', '.join(packages)} needs root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", "DPkg::Lock::Timeout=600"]
    _run(["apt-get", *lock, "update", "-q"], timeout=900, env=env)
    _run(
        ["apt-get", *lock, "install", "-y", "-q", "--no-install-recommends", *packages],
        timeout=1800,
        env=env,
    )


def ensure_docker() -> None:
    """A docker daemon that answers: Debian's docker.io installed if missing, dockerd started in
    the background if it is not running (it outlives this process, like a service)."""
    if docker_ready():
        return
    if shutil.which("dockerd") is None or shutil.which("docker") is None:
        print("installing Debian's docker.io, iptables and debootstrap", flush=True)
        apt_install("docker.io", "iptables", "debootstrap")
    if os.geteuid() != 0:
        raise DockerUnavailable("the docker daemon is not running, and starting it needs root")
    log = DOCKERD_LOG if os.access(DOCKERD_LOG.parent, os.W_OK) else Path(tempfile.gettempdir())
    if log.is_dir():
        log = log / "minhos-dockerd.log"
    with open(log, "ab") as out:
        daemon = subprocess.Popen(
            ["dockerd"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + DOCKER_START_S
    while not docker_ready():
        if daemon.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:]
            raise DockerUnavailable(f"dockerd did not start (log {log}):\n{tail}")
        time.sleep(0.3)
    print(f"dockerd started (pid {daemon.pid}, log {log})", flush=True)


def image_exists(tag: str) -> bool:
    done = subprocess.run(["docker", "image", "inspect", tag], capture_output=True, timeout=60)
    return done.returncode == 0


def size_bytes(tag: str) -> int:
    return int(_run(["docker", "image", "inspect", "--format", "{{.Size}}", tag], 60).strip())


# --- the local base -------------------------------------------------------------------------------


def debian_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The machine's configured Debian mirror (the one apt already reaches), deb822 or one-line."""
    for path in sorted((sources / "sources.list.d").glob("*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields = dict(
                line.split(":", 1) for line in stanza.splitlines() if ":" in line and line[0] != "#"
            )
            suites = fields.get("Suites", "").split()
            if SUITE in suites and fields.get("URIs", "").strip():
                return fields["URIs"].split()[0]
    listing = sources / "sources.list"
    if listing.is_file():
        for line in listing.read_text().splitlines():
            words = line.split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                return words[1]
    return DEFAULT_MIRROR


@contextmanager
def _locked(name: str) -> Iterator[None]:
    """One builder at a time (``make image`` and the tests may overlap) for ``name``."""
    WORK.mkdir(parents=True, exist_ok=True)
    with open(WORK / f".{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_base(tag: str = LOCAL_BASE) -> bool:
    """Builds the local base unless docker already has it (True when it was built)."""
    with _locked("base"):
        if image_exists(tag):
            return False
        if shutil.which("debootstrap") is None:
            apt_install("debootstrap")
        if os.geteuid() != 0:
            raise DockerUnavailable("debootstrap needs root")
        mirror = debian_mirror()
        print(f"building {tag}: debootstrap {SUITE} from {mirror}", flush=True)
        began = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="minhos-rootfs-", dir="/var/tmp") as tmp:
            rootfs = Path(tmp) / "rootfs"
            _run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    "--include=python3,python3-venv,ca-certificates",
                    SUITE,
                    str(rootfs),
                    mirror,
                ],
                timeout=DEBOOTSTRAP_S,
            )
            _strip(rootfs)
            tar = subprocess.Popen(
                ["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE
            )
            try:
                _run(["docker", "import", "-", tag], timeout=600, stdin=tar.stdout)
            finally:
                if tar.stdout is not None:
                    tar.stdout.close()
                if tar.wait(timeout=60) != 0:
                    raise RuntimeError(f"tar of {rootfs} failed ({tar.returncode})")
        print(f"{tag}: {size_bytes(tag) / 1e6:.0f} MB in {time.monotonic() - began:.0f} s")
        return True


def _strip(rootfs: Path) -> None:
    """What a slim image leaves out: apt's caches and lists, documentation (copyright files
    kept), manuals and translations."""
    for sub in ("var/cache/apt", "var/lib/apt/lists", "usr/share/man", "usr/share/info"):
        for child in (rootfs / sub).glob("*"):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    shutil.rmtree(rootfs / "usr/share/locale", ignore_errors=True)
    (rootfs / "usr/share/locale").mkdir()
    # os.walk, not rglob: a symlink in the rootfs may point at the host's own files.
    for folder, _, files in os.walk(rootfs / "usr/share/doc"):
        for name in files:
            if name != "copyright":
                (Path(folder) / name).unlink()


# --- wheels ---------------------------------------------------------------------------------------


def app_wheel() -> Path:
    """MinhOS's own wheel, built afresh from the checkout; the same bytes for the same code (fixed
    timestamps), so that docker's layer cache holds across builds."""
    out = WORK / "app"
    shutil.rmtree(out, ignore_errors=True)
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(out),
            str(ROOT),
        ],
        timeout=600,
        env={**os.environ, "SOURCE_DATE_EPOCH": "315532800"},
    )
    (wheel,) = out.glob("minhos-*.whl")
    return wheel


def requires(wheel: Path) -> list[str]:
    """The wheel's Requires-Dist lines: what decides its dependencies' wheels."""
    with zipfile.ZipFile(wheel) as zf:
        (name,) = (n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        text = zf.read(name).decode()
    return sorted(line for line in text.splitlines() if line.startswith("Requires-Dist:"))


def constraints() -> str:
    """This environment's versions (``pip freeze``), as pins for the image's."""
    return _run(
        [
            sys.executable,
            "-m",
            "pip",
            "freeze",
            "--exclude-editable",
            "--disable-pip-version-check",
        ],
        timeout=120,
    )


def platforms() -> list[str]:
    arch = platform.machine()
    return [f"manylinux_2_{minor}_{arch}" for minor in range(17, GLIBC_MINOR + 1)] + [
        f"manylinux2014_{arch}"
    ]


def dependency_wheels(image: Image, app: Path) -> Path:
    """Every dependency wheel of ``image``, for :data:`PYTHON` on this architecture; downloaded
    again only when the pins or the package's requirements changed."""
    pins = constraints()
    argv_tail = [
        "--only-binary=:all:",
        "--python-version",
        PYTHON,
        "--implementation",
        "cp",
        "--abi",
        f"cp{PYTHON.replace('.', '')}",
        *(arg for p in platforms() for arg in ("--platform", p)),
    ]
    key = hashlib.sha256(
        "\n".join([pins, image.extras, *requires(app), *argv_tail]).encode()
    ).hexdigest()
    out = WORK / "wheels" / image.target
    stamp = out / ".fingerprint"
    if stamp.is_file() and stamp.read_text() == key:
        return out
    with tempfile.TemporaryDirectory(prefix="wheels-", dir=WORK) as tmp:
        pinned = Path(tmp) / "constraints.txt"
        pinned.write_text(pins)
        dest = Path(tmp) / "wheels"
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--disable-pip-version-check",
                *argv_tail,
                "--constraint",
                str(pinned),
                "--dest",
                str(dest),
                # The checkout's wheel by path: a same-named project on an index cannot stand in.
                f"minhos[{image.extras}] @ {app.as_uri()}",
            ],
            timeout=DOWNLOAD_S,
        )
        for own in dest.glob("minhos-*.whl"):
            own.unlink()
        (dest / ".fingerprint").write_text(key)
        shutil.rmtree(out, ignore_errors=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        dest.rename(out)
    return out


def _stage(deps: Path, app: Path) -> None:
    shutil.rmtree(CONTEXT, ignore_errors=True)
    for sub, files in (("deps", sorted(deps.glob("*.whl"))), ("app", [app])):
        (CONTEXT / sub).mkdir(parents=True)
        for f in files:
            try:
                os.link(f, CONTEXT / sub / f.name)
            except OSError:
                shutil.copy2(f, CONTEXT / sub / f.name)


# --- images ---------------------------------------------------------------------------------------


def build(image: Image, base: str = LOCAL_BASE) -> Built:
    """Builds ``image`` from ``base`` (which must be present, or pullable for the public one),
    tags it ``NAME:VERSION`` and ``NAME:latest``, and checks its imports."""
    names = tags(image)
    with _locked("build"):
        began = time.monotonic()
        app = app_wheel()
        _stage(dependency_wheels(image, app), app)
        argv = [
            "docker",
            "build",
            "--file",
            str(DOCKERFILE),
            "--target",
            image.target,
            # The classic builder's --pull is a boolean: never look for a newer base.
            "--pull=false",
            "--build-arg",
            f"BASE_IMAGE={base}",
            "--build-arg",
            f"VERSION={version()}",
            "--build-arg",
            f"REVISION={revision()}",
            *(arg for name in names for arg in ("--tag", name)),
            str(ROOT),
        ]
        # BuildKit (buildx) is not installed with Debian's docker.io; the classic builder is.
        _run(argv, timeout=BUILD_S, env={**os.environ, "DOCKER_BUILDKIT": "0"})
        seconds = time.monotonic() - began
    check_imports(image, names[0])
    return Built(image, names, seconds, size_bytes(names[0]))


def check_imports(image: Image, tag: str) -> None:
    """Imports what ``image`` must have, and finds none of what it must not, in a container
    started as it is deployed (read-only, no network)."""
    probe = (
        "import importlib, importlib.util\n"
        f"for name in {image.imports!r}: importlib.import_module(name)\n"
        f"found = [n for n in {image.absent!r} if importlib.util.find_spec(n)]\n"
        "assert not found, f'must not be installed: {found}'\n"
    )
    run = ["docker", "run", "--rm", "--pull=never", "--read-only", "--network=none"]
    _run([*run, tag, "python", "-c", probe], timeout=300)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clients.image", description=__doc__)
    parser.add_argument("step", nargs="?", default="build", choices=("docker", "base", "build"))
    parser.add_argument("images", nargs="*", help=f"default: all of {', '.join(IMAGES)}")
    parser.add_argument(
        "--base", default=LOCAL_BASE, help=f"base image (default {LOCAL_BASE}, built if missing)"
    )
    args = parser.parse_args(argv)
    unknown = set(args.images) - set(IMAGES)
    if unknown:
        parser.error(f"unknown image {', '.join(sorted(unknown))}; choose from {', '.join(IMAGES)}")
    try:
        ensure_docker()
        if args.step == "docker":
            print("docker is ready")
            return 0
        if args.base == LOCAL_BASE:
            ensure_base()
        if args.step == "base":
            return 0
        for target in args.images or list(IMAGES):
            built = build(IMAGES[target], args.base)
            print(
                f"{' '.join(built.tags):<48} {built.size_mb:6.0f} MB   built in {built.seconds:.0f} s"
            )
    except (DockerUnavailable, RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
