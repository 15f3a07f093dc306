"""infra/nginx: the real nginx, with the real config, in front of a real ASGI upstream.

The config is rendered the way the nginx image does it (envsubst of the template's
variables into conf.d/brokerx.conf); only its /tmp state paths are moved into the test's
directory. The upstream is a tiny ASGI app served by uvicorn that stands for the api:
it answers /health, /metrics, /openapi.json and /api/v1/ping (echoing the proxy headers
it received) and echoes messages on the WebSocket /api/v1/stream.
"""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from brokerx_devstack.procs import free_ports

from .conftest import REPO_ROOT, free_port, require_binary, wait_for_port

NGINX_DIR = REPO_ROOT / "infra/nginx"

UPSTREAM_APP = textwrap.dedent(
    '''
    """Stands for the api upstream in tests/infra/test_nginx.py."""
    import json


    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.accept"})
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    return
                await send({"type": "websocket.send", "text": "echo:" + message.get("text", "")})
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        body = {"path": scope["path"], "query": scope["query_string"].decode(),
                "headers": headers}
        status = 200 if scope["path"] in (
            "/health", "/metrics", "/openapi.json", "/api/v1/ping", "/docs") else 404
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps(body).encode()})
    '''
)


def render_template(text: str, variables: dict[str, str]) -> str:
    """envsubst as the nginx image runs it: only the given ${NAME}s are replaced."""
    for name, value in variables.items():
        text = text.replace("${" + name + "}", value)
    leftover = re.findall(r"\$\{[A-Z_]+\}", text)
    assert not leftover, f"template variables without a value: {leftover}"
    return text


def render_nginx(
    root: Path, *, http_port: int, https_port: int, upstream: str, cert: Path, key: Path
) -> Path:
    """Writes root/conf/nginx.conf + conf.d/brokerx.conf; returns the main config path."""
    conf = root / "conf"
    (conf / "conf.d").mkdir(parents=True)
    state = root / "state"
    state.mkdir()
    main = (NGINX_DIR / "nginx.conf").read_text()
    assert "/tmp/" in main
    (conf / "nginx.conf").write_text(main.replace("/tmp/", f"{state}/"))
    template = (NGINX_DIR / "templates/brokerx.conf.template").read_text()
    rendered = render_template(
        template,
        {
            "NGINX_HTTP_PORT": str(http_port),
            "NGINX_HTTPS_PORT": str(https_port),
            "API_UPSTREAM": upstream,
            "NGINX_RESOLVER": "127.0.0.1",
            "SERVER_NAME": "_",
            "TLS_CERT": str(cert),
            "TLS_KEY": str(key),
        },
    )
    (conf / "conf.d/brokerx.conf").write_text(rendered)
    return conf / "nginx.conf"


@dataclass
class Edge:
    http: str
    https: str
    cert: Path
    upstream: str


@pytest.fixture(scope="module")
def nginx_bin() -> str:
    return require_binary("nginx", "/usr/sbin/nginx")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    require_binary("openssl")
    directory = tmp_path_factory.mktemp("certs")
    subprocess.run(
        [str(NGINX_DIR / "make-cert.sh"), str(directory)], check=True, capture_output=True
    )
    return directory / "server.crt", directory / "server.key"


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("upstream")
    (directory / "fake_api.py").write_text(UPSTREAM_APP)
    port = free_port()
    log = (directory / "uvicorn.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "fake_api:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--ws",
            "websockets",
            "--no-access-log",
        ],
        cwd=directory,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, timeout=15)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def edge(
    tmp_path_factory: pytest.TempPathFactory,
    nginx_bin: str,
    certs: tuple[Path, Path],
    upstream: str,
) -> Iterator[Edge]:
    root = tmp_path_factory.mktemp("nginx")
    http_port, https_port = free_ports(2)  # distinct (see brokerx_devstack.procs)
    config = render_nginx(
        root,
        http_port=http_port,
        https_port=https_port,
        upstream=upstream,
        cert=certs[0],
        key=certs[1],
    )
    prefix = root / "state"
    log = (root / "nginx.log").open("w")
    process = subprocess.Popen(
        [nginx_bin, "-p", str(prefix), "-c", str(config), "-g", "daemon off;"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(https_port)
        wait_for_port(http_port)
        yield Edge(
            http=f"http://127.0.0.1:{http_port}",
            https=f"https://127.0.0.1:{https_port}",
            cert=certs[0],
            upstream=f"http://{upstream}",
        )
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def https_client(edge: Edge) -> httpx.Client:
    """A client that trusts only the self-signed certificate nginx presents."""
    return httpx.Client(verify=ssl.create_default_context(cafile=str(edge.cert)), timeout=10)


def test_config_passes_nginx_t(tmp_path: Path, nginx_bin: str, certs: tuple[Path, Path]) -> None:
    config = render_nginx(
        tmp_path,
        http_port=free_port(),
        https_port=free_port(),
        upstream="127.0.0.1:3000",
        cert=certs[0],
        key=certs[1],
    )
    result = subprocess.run(
        [nginx_bin, "-t", "-p", str(tmp_path / "state"), "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_make_cert_writes_a_usable_pair_once(certs: tuple[Path, Path]) -> None:
    cert, key = certs
    text = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-text"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "DNS:localhost" in text
    assert "IP Address:127.0.0.1" in text
    again = subprocess.run(
        [str(NGINX_DIR / "make-cert.sh"), str(cert.parent)],
        check=True,
        capture_output=True,
        text=True,
    )
    assert "already exists" in again.stdout
    assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")


def test_https_proxies_the_api_with_forwarding_headers(edge: Edge) -> None:
    with https_client(edge) as client:
        response = client.get(f"{edge.https}/api/v1/ping?x=1", headers={"X-Request-ID": "req-42"})
    assert response.status_code == 200
    seen = response.json()
    assert seen["path"] == "/api/v1/ping"
    assert seen["query"] == "x=1"
    headers = seen["headers"]
    assert headers["x-request-id"] == "req-42"
    assert headers["x-forwarded-proto"] == "https"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-real-ip"] == "127.0.0.1"
    assert response.headers["x-request-id"] == "req-42"


def test_a_request_id_is_minted_when_missing(edge: Edge) -> None:
    with https_client(edge) as client:
        response = client.get(f"{edge.https}/api/v1/ping")
    minted = response.json()["headers"]["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", minted)
    assert response.headers["x-request-id"] == minted


def test_client_forwarded_for_is_not_trusted(edge: Edge) -> None:
    with https_client(edge) as client:
        response = client.get(f"{edge.https}/api/v1/ping", headers={"X-Forwarded-For": "6.6.6.6"})
    assert response.json()["headers"]["x-forwarded-for"] == "127.0.0.1"


def test_security_headers(edge: Edge) -> None:
    with https_client(edge) as client:
        response = client.get(f"{edge.https}/health")
    assert response.status_code == 200
    assert "max-age=" in response.headers["strict-transport-security"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert "nginx/" not in response.headers.get("server", "")


def test_http_redirects_to_https(edge: Edge) -> None:
    with httpx.Client(timeout=10, follow_redirects=False) as client:
        response = client.get(f"{edge.http}/api/v1/ping?x=1")
        health = client.get(f"{edge.http}/nginx-health")
    assert response.status_code in (301, 308)
    assert response.headers["location"] == "https://127.0.0.1/api/v1/ping?x=1"
    assert health.status_code == 200


def test_metrics_are_not_exposed(edge: Edge) -> None:
    assert httpx.get(f"{edge.upstream}/metrics").status_code == 200  # the upstream has them
    with https_client(edge) as client:
        assert client.get(f"{edge.https}/metrics").status_code == 404
        assert client.get(f"{edge.https}/metrics?format=text").status_code == 404


def test_only_public_paths_are_proxied(edge: Edge) -> None:
    with https_client(edge) as client:
        for path in ("/health", "/openapi.json", "/docs"):
            response = client.get(f"{edge.https}{path}")
            assert response.status_code == 200, path
            assert response.json()["path"] == path
        assert client.get(f"{edge.https}/internal/anything").status_code == 404


def test_websocket_upgrade_passes_through(edge: Edge) -> None:
    context = ssl.create_default_context(cafile=str(edge.cert))
    url = edge.https.replace("https://", "wss://") + "/api/v1/stream"
    with ws_connect(url, ssl=context, open_timeout=10) as websocket:
        websocket.send(json.dumps({"action": "auth", "token": "t"}))
        assert websocket.recv(timeout=10) == 'echo:{"action": "auth", "token": "t"}'
        websocket.send("second")
        assert websocket.recv(timeout=10) == "echo:second"
