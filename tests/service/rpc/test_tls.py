"""Streams over TLS and mutual TLS, with certificates made by the test (openssl); a client
whose certificate another CA signed is refused."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from isvos.errors import IsvosError
from service.rpc.gen import segmentation_pb2 as pb
from tests.helpers.stack import GrpcProcess, make_settings
from tests.service.rpc.conftest import stream

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed"),
]
SMALL = pb.Open(short_side=96)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _ca(folder: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.pem",
             cwd=folder)  # fmt: skip


def _signed(folder: Path, name: str, ca: str, san: str) -> None:
    (folder / f"{name}.ext").write_text(f"subjectAltName={san}\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout",
             f"{name}.key", "-out", f"{name}.csr", cwd=folder)  # fmt: skip
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
             cwd=folder)  # fmt: skip


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("certs")
    _ca(folder, "ca")
    _ca(folder, "rogue-ca")
    _signed(folder, "server", "ca", "IP:127.0.0.1,DNS:localhost")
    _signed(folder, "client", "ca", "DNS:camera")
    _signed(folder, "rogue", "rogue-ca", "DNS:camera")
    return folder


def _client_tls(certs: Path, client: str | None) -> dict:
    tls = {"root_certificates": (certs / "ca.pem").read_bytes()}
    if client:
        tls["certificate_chain"] = (certs / f"{client}.pem").read_bytes()
        tls["private_key"] = (certs / f"{client}.key").read_bytes()
    return tls


def test_tls_and_mutual_tls(redis_server, tmp_path, certs, clip_frames):
    frames, first = clip_frames
    frames = frames[:6]
    tls = {"tls_cert": str(certs / "server.pem"), "tls_key": str(certs / "server.key")}
    server = GrpcProcess(make_settings(redis_server.url, tmp_path / "tls",
                                       grpc={"port": 0, **tls}), tmp_path)  # fmt: skip
    mutual = GrpcProcess(make_settings(redis_server.url, tmp_path / "mtls", grpc={
        "port": 0, **tls, "tls_client_ca": str(certs / "ca.pem")}), tmp_path)  # fmt: skip
    try:
        results, _ = stream(server.target, frames, {0: first}, open_options=SMALL,
                            **_client_tls(certs, None))  # fmt: skip
        assert [r.index for r in results] == list(range(6))
        results, _ = stream(mutual.target, frames, {0: first}, open_options=SMALL,
                            **_client_tls(certs, "client"))  # fmt: skip
        assert [r.index for r in results] == list(range(6))
        for who in (None, "rogue"):  # no client certificate, or one of another CA
            with pytest.raises(IsvosError) as refused:
                stream(mutual.target, frames, {0: first}, open_options=SMALL,
                       reconnect_s=2, **_client_tls(certs, who))  # fmt: skip
            assert refused.value.code == "unavailable"
        with pytest.raises(IsvosError):  # plaintext to a TLS server
            stream(server.target, frames, {0: first}, open_options=SMALL, reconnect_s=2)
    finally:
        server.stop()
        mutual.stop()


def test_plaintext_off_loopback_is_refused_at_start():
    from pydantic import ValidationError

    from service.settings import GrpcSettings

    with pytest.raises(ValidationError, match="not loopback"):
        GrpcSettings(host="0.0.0.0")
    assert GrpcSettings(host="0.0.0.0", allow_insecure=True).host == "0.0.0.0"
    with pytest.raises(ValidationError, match="go together"):
        GrpcSettings(tls_cert="a.pem")
