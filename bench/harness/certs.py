"""The anchors' PKI: an ECDSA P-256 CA and two leaves, `inbound` and `outbound`, each with
SANs DNS:<name>.bench.local and URI:spiffe://bench.local/ns/default/sa/<name>,
EKU serverAuth+clientAuth, CA:FALSE (as shared/bench-anchors/README.md describes).
meshwork does not use these: its control plane issues its own SVIDs."""

import subprocess

from paths import CERTS

LEAVES = ("inbound", "outbound")


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, cwd=CERTS, capture_output=True)


def _make_ca() -> None:
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key")
    _openssl("req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", "3650",
             "-subj", "/CN=bench.local CA", "-out", "ca.pem",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")


def _make_leaf(name: str) -> None:
    ext = CERTS / f"{name}.ext"
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        f"subjectAltName=DNS:{name}.bench.local,URI:spiffe://bench.local/ns/default/sa/{name}\n")
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.ec.key")
    _openssl("pkcs8", "-topk8", "-nocrypt", "-in", f"{name}.ec.key", "-out", f"{name}.key")
    _openssl("req", "-new", "-key", f"{name}.key", "-subj", f"/CN={name}.bench.local",
             "-out", f"{name}.csr")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "3650", "-sha256", "-extfile", ext.name,
             "-out", f"{name}.pem")
    bundle = (CERTS / f"{name}.pem").read_text() + (CERTS / f"{name}.key").read_text()
    (CERTS / f"{name}.bundle.pem").write_text(bundle)  # haproxy wants cert + key in one file


def ensure_certs() -> None:
    """Creates the CA and leaves once; later runs reuse them."""
    if all((CERTS / f"{n}.bundle.pem").exists() for n in LEAVES):
        return
    CERTS.mkdir(parents=True, exist_ok=True)
    _make_ca()
    for name in LEAVES:
        _make_leaf(name)
