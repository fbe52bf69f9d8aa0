"""Running the application under uvicorn, with a shutdown that answers held long-polls."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from policy_pubsub.api import create_app
from policy_pubsub.api.state import app_state
from policy_pubsub.config import Settings
from policy_pubsub.connections import ConnectionLimits, GuardedProtocol, guarded

log = logging.getLogger(__name__)


class Server(uvicorn.Server):
    """uvicorn's server; when shutdown begins, the router answers every held read at once,
    so stopping takes a moment rather than a long-poll timeout.
    """

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self.app = app

    async def startup(self, sockets: list[Any] | None = None) -> None:
        if not self.config.loaded:
            self.config.load()
        log.info("event loop %s, HTTP parser %s", *self.runtime())
        await super().startup(sockets)

    def runtime(self) -> tuple[str, str]:
        """The event loop and HTTP parser this server runs on, e.g. ``("uvloop", "httptools")``;
        call it on the loop once the config is loaded. uvicorn picks uvloop and httptools when
        they are installed (dependencies where the platform has wheels), else asyncio and h11.
        """
        loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
        protocol = self.config.http_protocol_class
        if issubclass(protocol, GuardedProtocol):
            protocol = protocol.http_protocol_class
        parser = protocol.__module__.rsplit(".", 1)[-1]
        return loop, parser.removesuffix("_impl")

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        running = app_state(self.app).running
        if running is not None and running.pap is not None:
            # While the router still carries it: the PDP's goodbye to its PAP.
            await running.pap.close()
        if running is not None:
            log.info("shutting down: answering held long-polls")
            await running.router.drain()
        await super().shutdown(sockets)

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        socket = self.servers[0].sockets[0]
        port: int = socket.getsockname()[1]
        return port


def build_server(
    settings: Settings, http: type[asyncio.Protocol] = AutoHTTPProtocol, **uvicorn_options: Any
) -> Server:
    """The server of ``settings``: uvicorn running the app with ``http`` (httptools when it is
    installed, else h11) under the settings' deadlines for slow clients.
    """
    app = create_app(settings)
    limits = ConnectionLimits(
        header_seconds=settings.header_timeout_seconds,
        body_seconds=settings.body_timeout_seconds,
        max_incomplete=settings.max_incomplete_requests,
    )
    config = uvicorn.Config(
        app,
        http=guarded(http, limits),
        host=settings.host,
        port=settings.port,
        log_config=None,
        log_level=settings.log_level,
        timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_seconds)),
        lifespan="on",
        ssl_certfile=settings.ssl_certfile,
        ssl_keyfile=settings.ssl_keyfile,
        **uvicorn_options,
    )
    return Server(config, app)
