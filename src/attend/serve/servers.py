"""uvicorn's server and worker process, made to answer the connections queued on the port at shutdown.

Kept apart from :mod:`attend.serve.app` because uvicorn starts ``--workers`` processes by pickling
the worker object: its class must be importable by name, and this module imports uvicorn, which
the app's module leaves until a server starts.
"""

from __future__ import annotations

import asyncio
import select
import socket
from collections.abc import Sequence

import uvicorn

__all__ = ["DrainingServer", "accept_backlog"]


async def accept_backlog(servers: Sequence[asyncio.AbstractServer], *, limit: float = 1.0,
                         read: float = 0.05) -> None:  # fmt: skip
    """Accept the connections already queued on ``servers``' listening sockets before they close.

    The kernel completes a client's handshake before the server accepts it, and the client sends its
    request. Closing a listening socket resets every connection still queued there: on SIGTERM under
    load, a client whose request was sent whole got a reset, neither an answer nor a refusal, and
    could not tell whether it was served (25 of 30 in one audit). Waits while a listening socket has
    a connection to accept (up to ``limit`` seconds: under steady load the queue never empties), then
    ``read`` seconds more, so the last ones accepted have read their requests before uvicorn asks
    idle connections to close; those requests are then in flight, and answered.
    """
    listeners = [sock for server in servers for sock in (server.sockets or ())]  # type: ignore[attr-defined]
    if not listeners:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while loop.time() < deadline:
        queued, _, _ = select.select(listeners, [], [], 0)
        if not queued:
            break
        await asyncio.sleep(0.005)  # the event loop accepts them
    await asyncio.sleep(read)


class DrainingServer(uvicorn.Server):
    """uvicorn's ``Server`` that accepts the connections queued on its port before it closes it
    (:func:`accept_backlog`)."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await accept_backlog(getattr(self, "servers", []))
        await super().shutdown(sockets)


try:  # uvicorn 0.52 and later: a worker process's Server is built by its Process
    from uvicorn.supervisors.multiprocess import Process as _Process
except ImportError:  # pragma: no cover - older uvicorn: the supervisor is given the server's run
    _Process = None  # type: ignore[assignment,misc]

if _Process is not None and hasattr(_Process, "server"):

    class DrainingWorker(_Process):  # type: ignore[misc,valid-type]
        """A ``--workers`` process whose server is a :class:`DrainingServer`."""

        @property
        def server(self) -> uvicorn.Server:
            if self._server is None:
                self._server = DrainingServer(config=self.config)
            return self._server

    __all__ += ["DrainingWorker"]
