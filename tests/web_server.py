"""Run the real studio app with uvicorn in a background thread, on a free 127.0.0.1 port, for tests.

    with running_studio(home) as server:
        httpx.get(server.url + "/api/status")
"""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import uvicorn

from localdiffusion.server.app import create_app
from localdiffusion.server.studio import Studio
from localdiffusion.store.home import Home


@dataclass
class RunningStudio:
    url: str
    studio: Studio
    server: uvicorn.Server


def _listening_socket() -> socket.socket:
    # Bound here (port 0: the system picks a free one) and handed to uvicorn, so no other process can take it between.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


@contextmanager
def running_studio(home: Home, token: str | None = None, startup_timeout: float = 20.0) -> Iterator[RunningStudio]:
    """The studio on `home`, serving until the block ends; the worker thread runs jobs as in `localdiffusion serve`."""
    studio = Studio.open(home, token=token)
    app = create_app(studio)
    sock = _listening_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", ws="auto")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("The test server did not start.")
        time.sleep(0.02)
    try:
        yield RunningStudio(f"http://127.0.0.1:{port}", studio, server)
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
