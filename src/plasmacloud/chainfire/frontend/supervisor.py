"""The member's frontend workers: started, awaited, restarted when one dies, stopped.

Workers are children of the member, in its process group (a lab or systemd stopping
the member's group stops them too); a worker whose member dies sees its socket close
and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from plasmacloud.chainfire.frontend.dispatch import MemberLink, MethodRegistry
from plasmacloud.chainfire.metrics import ChainfireMetrics

log = logging.getLogger(__name__)

# Importing grpc and the member's modules takes seconds on a slow VM; wait that long.
READY_TIMEOUT = 120.0
RESTART_DELAY = 1.0


# sockaddr_un holds 108 bytes with the terminating NUL
_MAX_SOCKET_PATH = 100


class FrontendError(RuntimeError):
    """The workers did not come up."""


def socket_path(data: Path) -> Path:
    """Where the member listens for its workers: in its data directory, or, when that
    path is too long for a Unix socket, in a new private (0700) temporary directory.

    Never an abstract socket: anyone on the host could connect to one, and the link
    carries the callers' verified identities.
    """
    inside = data / "frontend.sock"
    if len(str(inside)) <= _MAX_SOCKET_PATH:
        return inside
    return Path(tempfile.mkdtemp(prefix="chainfire-frontend-")) / "link.sock"


class Frontends:
    """``count`` worker processes serving the client port for this member."""

    def __init__(
        self,
        count: int,
        config_path: Path,
        socket_path: Path,
        registry: MethodRegistry,
        metrics: ChainfireMetrics | None = None,
    ):
        self.count, self.config_path, self.socket_path = count, config_path, socket_path
        self.registry, self.metrics = registry, metrics
        self._ready: asyncio.Queue[MemberLink] = asyncio.Queue()
        self._server: asyncio.AbstractServer | None = None
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._keepers: list[asyncio.Task[None]] = []
        self._stopping = False

    async def start(self) -> None:
        """Listen on the socket, start the workers, return once every one listens."""
        loop = asyncio.get_running_loop()
        self.socket_path.unlink(missing_ok=True)
        old_umask = os.umask(0o177)  # the socket is this member's alone: 0600
        try:
            self._server = await loop.create_unix_server(
                lambda: MemberLink(self.registry, self._ready), str(self.socket_path)
            )
        finally:
            os.umask(old_umask)
        self._keepers = [
            loop.create_task(self._keep(slot), name=f"frontend-{slot}")
            for slot in range(self.count)
        ]
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                for _ in range(self.count):
                    await self._ready.get()
        except TimeoutError:
            await self.stop()
            raise FrontendError(
                f"{self.count} frontend workers did not listen within {READY_TIMEOUT:.0f} s; "
                "see their log lines above"
            ) from None

    async def _spawn(self) -> asyncio.subprocess.Process:
        argv = [
            sys.executable,
            "-m",
            "plasmacloud.chainfire.frontend.worker",
            "--config",
            str(self.config_path),
            "--socket",
            str(self.socket_path),
            "--log-level",
            logging.getLevelName(logging.getLogger().level),
        ]
        return await asyncio.create_subprocess_exec(*argv)

    async def _keep(self, slot: int) -> None:
        """Keep one worker running until stop()."""
        while not self._stopping:
            proc = await self._spawn()
            self._procs[slot] = proc
            if self._stopping:  # stop() ran while this one was being started
                proc.terminate()
            if self.metrics:
                self.metrics.frontend_workers.inc()
            code = await proc.wait()
            if self.metrics:
                self.metrics.frontend_workers.dec()
            if self._stopping:
                return
            log.warning(
                "frontend worker %d (pid %d) exited with %s; restarting", slot, proc.pid, code
            )
            if self.metrics:
                self.metrics.frontend_restarts.inc()
            await asyncio.sleep(RESTART_DELAY)

    async def stop(self) -> None:
        """Stop the workers (SIGTERM, then SIGKILL after 5 s) and close the socket."""
        self._stopping = True
        for proc in self._procs.values():
            if proc.returncode is None:
                proc.terminate()
        for proc in self._procs.values():
            try:
                await asyncio.wait_for(proc.wait(), 5.0)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for task in self._keepers:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            self._server.close()
        self.socket_path.unlink(missing_ok=True)
        if self.socket_path.parent.name.startswith("chainfire-frontend-"):
            shutil.rmtree(self.socket_path.parent, ignore_errors=True)
