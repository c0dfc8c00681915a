"""TLS on every listener (grpcs, wss, https) with a certificate the tests make (tests/certs.py): real clients that
trust the test authority are served, with an API key too; clients that trust another authority are refused."""

from __future__ import annotations

import json
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import openai
import pytest
from antiphon.v1 import generation_pb2_grpc, models_pb2
from websockets.asyncio.client import connect

from server.errors import InvalidArgument
from tests.certs import Certificates
from tests.conftest import timeout

pytestmark = pytest.mark.parametrize("make_text_engine", ["fast"], indirect=True)

StartServer = Callable[..., Any]
TRANSPORTS = ("grpc", "ws", "http")
KEY = "sk-over-tls"


def tls_settings(certificates: Certificates, **more: Any) -> dict[str, Any]:
    return {"tls_cert": certificates.cert, "tls_key": certificates.key, **more}


async def first_model(server: Any, transport: str, ca: Path, key: str = KEY) -> str:
    """The first model's id over ``transport`` with TLS, trusting only the authority ``ca``, carrying ``key``: over
    HTTP through the official SDK (an httpx client that verifies against ``ca``)."""
    if transport == "grpc":
        credentials = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
        async with grpc.aio.secure_channel(server.grpc_address, credentials) as channel:
            response = await generation_pb2_grpc.GenerationStub(channel).ListModels(
                models_pb2.ListModelsRequest(), metadata=(("authorization", f"Bearer {key}"),), timeout=timeout(10)
            )
        return str(response.models[0].id)
    trusted = ssl.create_default_context(cafile=str(ca))
    if transport == "ws":
        headers = {"Authorization": f"Bearer {key}"}
        async with connect(f"wss://{server.ws_address}/", ssl=trusted, additional_headers=headers) as ws:
            await ws.send(json.dumps({"type": "list_models", "id": "m"}))
            return str(json.loads(await ws.recv())["models"][0]["id"])
    base = f"https://{server.http_address}/v1"
    async with (
        httpx.AsyncClient(verify=trusted, timeout=timeout(10)) as http,
        openai.AsyncOpenAI(base_url=base, api_key=key, http_client=http, max_retries=0) as client,
    ):
        return (await client.models.list()).data[0].id


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_tls_serves_a_client_that_trusts_the_authority(
    start_server: StartServer, certificates: Certificates, transport: str
) -> None:
    """grpcs, wss and https (the SDK) with the server's key are served by a client that trusts the test CA."""
    server = await start_server(settings=tls_settings(certificates, api_key=KEY))
    assert server.tls
    assert await first_model(server, transport, certificates.ca) == "tiny"


async def test_the_sdk_streams_a_chat_over_https(start_server: StartServer, certificates: Certificates) -> None:
    """A streamed chat completion arrives whole over https."""
    server = await start_server(settings=tls_settings(certificates, api_key=KEY))
    trusted = ssl.create_default_context(cafile=str(certificates.ca))
    base = f"https://{server.http_address}/v1"
    async with (
        httpx.AsyncClient(verify=trusted, timeout=timeout(10)) as http,
        openai.AsyncOpenAI(base_url=base, api_key=KEY, http_client=http, max_retries=0) as client,
    ):
        stream = await client.chat.completions.create(
            model="tiny/fool", messages=[{"role": "user", "content": "Hail."}], stream=True, max_tokens=8, seed=1
        )
        reasons = [chunk.choices[0].finish_reason async for chunk in stream if chunk.choices]
    assert reasons[-1] in ("stop", "length")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_client_that_trusts_another_authority_is_refused(
    start_server: StartServer, certificates: Certificates, transport: str
) -> None:
    """A client whose trusted authority did not sign the server's certificate refuses the connection."""
    server = await start_server(settings=tls_settings(certificates, api_key=KEY))
    errors: dict[str, type[Exception]] = {
        "grpc": grpc.aio.AioRpcError,
        "ws": ssl.SSLCertVerificationError,
        "http": openai.APIConnectionError,
    }
    with pytest.raises(errors[transport]) as info:
        await first_model(server, transport, certificates.other_ca)
    if isinstance(info.value, grpc.aio.AioRpcError):
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    if isinstance(info.value, openai.APIConnectionError):
        assert "CERTIFICATE_VERIFY_FAILED" in repr(info.value.__cause__)


async def test_a_key_that_is_not_the_certificates_is_refused_at_start(
    start_server: StartServer, certificates: Certificates
) -> None:
    """--tls-key of another certificate stops the server before it listens, naming --tls-cert."""
    with pytest.raises(InvalidArgument) as info:
        await start_server(settings={"tls_cert": certificates.cert, "tls_key": certificates.ca.with_suffix(".key")})
    assert info.value.field == "--tls-cert"
    assert str(info.value).startswith(f"--tls-cert: cannot serve {certificates.cert} with the key ")


async def test_an_encrypted_key_is_refused_without_asking_for_its_pass_phrase(
    start_server: StartServer, certificates: Certificates, tmp_path: Path
) -> None:
    """An encrypted --tls-key is InvalidArgument naming it, with how to decrypt it; no pass phrase is asked for."""
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(
        ["openssl", "ec", "-in", str(certificates.key), "-aes256", "-passout", "pass:secret", "-out", str(encrypted)],
        check=True,
        capture_output=True,
    )
    with pytest.raises(InvalidArgument) as info:
        await start_server(settings={"tls_cert": certificates.cert, "tls_key": encrypted})
    assert str(info.value) == (
        f"--tls-key: {encrypted} is encrypted: give an unencrypted key (openssl pkey -in KEY -out PLAIN)"
    )
