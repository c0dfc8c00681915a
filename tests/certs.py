"""A private certificate authority and a server certificate it signed, made by the ``openssl`` command line (no
Python package needed, so the torch-free edge environment makes them too): what the TLS tests serve and trust."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
SERVER_EXTENSIONS = """\
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""


@dataclass(frozen=True)
class Certificates:
    ca: Path  # the authority's certificate: what a client trusts
    cert: Path  # the server's certificate (127.0.0.1, ::1 and localhost)
    key: Path  # its private key
    other_ca: Path  # an authority that signed nothing here: a client trusting only it must refuse the server


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _authority(folder: Path, name: str) -> tuple[Path, Path]:
    _openssl(
        *("req", "-x509", *EC, "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2"),
        *("-subj", f"/CN=antiphon test {name}"),
        *("-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"),
        cwd=folder,
    )
    return folder / f"{name}.pem", folder / f"{name}.key"


def make_certificates(folder: Path) -> Certificates:
    """A fresh authority, a server certificate it signed for the loopback addresses, and an unrelated authority."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command line makes the test certificates: apt install openssl")
    ca, ca_key = _authority(folder, "ca")
    other_ca, _ = _authority(folder, "other-ca")
    (folder / "server.ext").write_text(SERVER_EXTENSIONS, encoding="utf-8")
    _openssl("req", *EC, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost", cwd=folder)
    _openssl(
        *("x509", "-req", "-in", "server.csr", "-CA", str(ca), "-CAkey", str(ca_key), "-set_serial", "2"),
        *("-days", "2", "-extfile", "server.ext", "-out", "server.pem"),
        cwd=folder,
    )
    return Certificates(ca, folder / "server.pem", folder / "server.key", other_ca)
