"""A loopback TCP proxy that can lose one reply on the wire, after the server wrote it.

Every connection is forwarded both ways as it is. Once ``arm()`` is called, the next chunk
the server sends that holds a topic message of a snapshot (JSON text inside the JSON array of
a long-poll answer, so its quotes arrive escaped: ``\\"subscriber_id\\"``) is not forwarded:
the proxy drops it and cuts the client's connection. For the server the reply was written,
so the router moves the consumer group past those messages; the client sees a connection
closed under it.
"""

from __future__ import annotations

import asyncio
import contextlib

SNAPSHOT_IN_A_POLL = b'\\"subscriber_id\\"'


class CuttingProxy:
    """``async with CuttingProxy(port) as proxy:``; ``proxy.url`` goes to ``port``."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream_port = upstream_port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._armed = False
        self.cut = asyncio.Event()
        self.url = ""

    def arm(self) -> None:
        """Lose the next poll answer that carries a snapshot, and cut that connection."""
        self._armed = True

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _connection(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(client_writer)
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self._upstream_port
            )
            self._writers.add(upstream_writer)
            await asyncio.gather(
                self._pipe(client_reader, upstream_writer, inspect=False, client=client_writer),
                self._pipe(upstream_reader, client_writer, inspect=True, client=client_writer),
            )
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            for writer in (client_writer, upstream_writer):
                if writer is not None:
                    self._writers.discard(writer)
                    writer.transport.abort()
            if task is not None:
                self._tasks.discard(task)

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        inspect: bool,
        client: asyncio.StreamWriter,
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if inspect and self._armed and SNAPSHOT_IN_A_POLL in data:
                    self._armed = False
                    client.transport.abort()  # the reply is lost with the connection
                    self.cut.set()
                    return
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
