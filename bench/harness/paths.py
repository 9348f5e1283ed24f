"""Where everything lives. Generated files go under bench/work/ (git-ignored);
only reports in bench/results/ are meant to be committed."""

import os
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
REPO = BENCH.parent
WORK = BENCH / "work"
ANCHOR_TEMPLATES = BENCH / "anchors"
MESH_RESOURCES = BENCH / "mesh"
RESULTS = BENCH / "results"

CERTS = WORK / "certs"
CONF = WORK / "conf"          # rendered anchor configs
LOGS = WORK / "logs"          # proxy stderr/stdout, nginx error logs, temp dirs
RAW = WORK / "raw"            # per-run raw JSON (also copied next to the report)
MESH_STATE = WORK / "mesh-state"
CALLGRIND = WORK / "callgrind"

VENV = WORK / "venv"
CARGO_ROOT = WORK / "cargo-bin"
ENVOY = VENV / "lib" / "python3.11" / "site-packages" / "envoy" / "_bin" / "envoy"
# MESHWORK_BIN=/path/to/meshwork measures another build (e.g. an A/B of a profile change);
# bench/run then skips building and says which binary it used.
MESHWORK = Path(os.environ.get("MESHWORK_BIN", REPO / "target" / "release" / "meshwork")).resolve()


def relative(text: str) -> str:
    """Report text with this checkout's absolute path removed: paths read from the repository root,
    so a committed report never names the machine it was made on."""
    if not MESHWORK.is_relative_to(REPO):  # MESHWORK_BIN elsewhere: name the variable, not the path
        text = text.replace(str(MESHWORK), "$MESHWORK_BIN")
    return text.replace(f"{REPO}/", "").replace(str(REPO), ".")


def envoy_binary() -> Path:
    """The envoy binary inside the venv, whatever the venv's Python minor version."""
    found = sorted(VENV.glob("lib/python3*/site-packages/envoy/_bin/envoy"))
    return found[0] if found else ENVOY


def ensure_dirs() -> None:
    for d in (WORK, CERTS, CONF, LOGS, LOGS / "tmp", RAW, MESH_STATE, CALLGRIND, RESULTS):
        d.mkdir(parents=True, exist_ok=True)
