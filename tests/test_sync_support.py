"""Test harness of the sync tests (no tests here): a real SecantusDB (MongoDB wire protocol)
server, the real cloud app under uvicorn with mutual TLS, a TCP proxy that cuts connections,
and an appliance enrolled with a test CA made with ``cryptography``."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymongo
import pytest
import uvicorn

from appliance.config import Settings
from appliance.keys import write_secret
from sync.agent import CLIENT_CERT, CLIENT_KEY, CLOUD_CA, GATEWAY_KEY, TENANT_KEY
from sync.server.app import ServerSettings, create_app, uvicorn_config
from sync.server.gateway_simulator import new_gateway_key, public_pem
from sync.server.pki import Issued, issue_appliance, issue_server, new_ca
from sync.server.storage import CloudStore

TENANT = "pharmacie-test"
SECANTUSD = Path(sys.executable).parent / "secantusd-py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Secantus:
    """A SecantusDB server process on loopback (a real MongoDB wire-protocol server)."""

    def __init__(self, storage: Path) -> None:
        self.storage = storage
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def start(self) -> None:
        self.storage.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                str(SECANTUSD),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--storage-path",
                str(self.storage),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
                    self.uri, serverSelectionTimeoutMS=500
                )
                client.admin.command("ping")
                client.close()
                return
            except pymongo.errors.PyMongoError:
                time.sleep(0.2)
        raise RuntimeError("SecantusDB did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


def secantus_or_skip(tmp: Path) -> Secantus:
    if not SECANTUSD.exists():
        pytest.skip("secantusd-py missing: pip install --pre secantusdb (dev dependency)")
    server = Secantus(tmp / "secantus")
    server.start()
    return server


class Pki:
    """A cloud CA, its server certificate for loopback, and one appliance certificate."""

    def __init__(self, directory: Path, tenant: str = TENANT) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = new_ca()
        server = issue_server(self.ca, ["localhost"], ["127.0.0.1"])
        self.client = issue_appliance(self.ca, tenant)
        self.gateway_key = new_gateway_key()
        for name, data in (
            ("ca.pem", self.ca.cert_pem),
            ("server.pem", server.cert_pem),
            ("server.key", server.key_pem),
            ("client.pem", self.client.cert_pem),
            ("client.key", self.client.key_pem),
        ):
            (directory / name).write_bytes(data)

    def issue(self, tenant: str) -> Issued:
        return issue_appliance(self.ca, tenant)

    def server_settings(self, port: int, mongo_uri: str, database: str) -> ServerSettings:
        return ServerSettings(
            mongo_uri=mongo_uri,
            database=database,
            host="127.0.0.1",
            port=port,
            cert_file=self.dir / "server.pem",
            key_file=self.dir / "server.key",
            client_ca_file=self.dir / "ca.pem",
            mongo_timeout_ms=2000,
        )

    def enroll(self, settings: Settings) -> None:
        """Install the appliance's sync secrets as ``hygie sync enroll`` would."""
        key_dir = settings.key_path
        write_secret(key_dir / CLIENT_CERT, self.client.cert_pem)
        write_secret(key_dir / CLIENT_KEY, self.client.key_pem)
        write_secret(key_dir / CLOUD_CA, self.ca.cert_pem)
        write_secret(key_dir / GATEWAY_KEY, public_pem(self.gateway_key))
        write_secret(key_dir / TENANT_KEY, (b"ab" * 32) + b"\n")


class FailFirst:
    """ASGI wrapper: the first ``n`` HTTP requests get a 500, then the real app answers."""

    def __init__(self, app: Any, n: int) -> None:
        self.app, self.remaining, self.failed = app, n, 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.remaining > 0:
            self.remaining -= 1
            self.failed += 1
            await send({"type": "http.response.start", "status": 500, "headers": []})
            await send({"type": "http.response.body", "body": b"boom"})
            return
        await self.app(scope, receive, send)


class DropAnswers:
    """ASGI wrapper: for the first ``n`` batch pushes, once the real app has stored the batch
    and starts its answer, tell the proxy to cut the connection before the answer passes."""

    def __init__(self, app: Any, proxy: CuttingProxy, n: int) -> None:
        self.app, self.proxy, self.remaining = app, proxy, n

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/batches" or self.remaining <= 0:
            await self.app(scope, receive, send)
            return
        self.remaining -= 1

        async def signalling_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                self.proxy.drop_next_answer = True
            await send(message)

        await self.app(scope, receive, signalling_send)


class CloudServer:
    """The real cloud app under uvicorn (mutual TLS) in a thread; stoppable and restartable."""

    def __init__(
        self, pki: Pki, mongo_uri: str, database: str | None = None, write_mode: str = "upsert"
    ) -> None:
        self.port = free_port()
        self.settings = pki.server_settings(
            self.port, mongo_uri, database or f"t{uuid.uuid4().hex[:12]}"
        )
        self.store = CloudStore.connect(
            mongo_uri, self.settings.database, timeout_ms=2000, write_mode=write_mode
        )
        self.store.ensure_indexes()
        self.app: Any = create_app(self.store, self.settings)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self, wrap: Callable[[Any], Any] | None = None) -> None:
        app = wrap(self.app) if wrap else self.app
        config = uvicorn_config(app, self.settings, lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("cloud server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            assert self._thread is not None
            self._thread.join(timeout=10)
            self._server = None

    def close(self) -> None:
        self.stop()
        self.store.client.drop_database(self.settings.database)
        self.store.close()


class CuttingProxy:
    """A TCP proxy in front of the cloud that breaks connections on purpose.

    ``drop_next_answer`` (set by :class:`DropAnswers` once the cloud has stored a batch and
    is about to acknowledge it): the connection is closed before the acknowledgement reaches
    the appliance. ``cut_next``: that many new connections forward only the first
    ``cut_bytes`` of the upload (cut mid-request).
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.cut_next = 0
        self.drop_next_answer = False
        self.cut_bytes = 2000
        self.cuts = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(5)

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        cut = self.cut_next > 0
        if cut:
            self.cut_next -= 1
            self.cuts += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        sent = 0

        async def upstream() -> None:
            nonlocal sent
            while data := await reader.read(65536):
                if cut and sent + len(data) > self.cut_bytes:
                    up_writer.write(data[: max(0, self.cut_bytes - sent)])
                    up_writer.close()
                    writer.close()
                    return
                sent += len(data)
                up_writer.write(data)
                await up_writer.drain()
            up_writer.close()

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                if self.drop_next_answer:
                    # the cloud stored the batch and answers: drop the answer on the floor
                    self.drop_next_answer = False
                    self.cuts += 1
                    writer.close()
                    up_writer.close()
                    return
                writer.write(data)
                await writer.drain()
            writer.close()

        await asyncio.gather(upstream(), downstream(), return_exceptions=True)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


def sync_settings(settings: Settings, url: str, **extra: Any) -> Settings:
    """The appliance's settings pointed at ``url`` with fast retries for tests."""
    values: dict[str, Any] = {
        "sync_url": url,
        "retry_attempts": 3,
        "retry_initial_wait_s": 0.01,
        "retry_max_wait_s": 0.05,
        "breaker_threshold": 3,
        "breaker_ttl_s": 0.5,
        "sync_timeout_s": 5.0,
    }
    values.update(extra)
    return settings.model_copy(update=values)


@pytest.fixture(scope="module")
def secantus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secantus]:
    server = secantus_or_skip(tmp_path_factory.mktemp("mongo"))
    yield server
    server.stop()
    shutil.rmtree(server.storage, ignore_errors=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def cloud(pki: Pki, secantus: Secantus) -> Iterator[CloudServer]:
    server = CloudServer(pki, secantus.uri)
    server.start()
    yield server
    server.close()
