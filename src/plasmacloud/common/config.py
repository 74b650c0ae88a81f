"""The per-node configuration model (``cluster-config.json``).

One pydantic model describes everything a node's services need: who the node is, who
its peers are, which ports each service listens on, where the TLS files live and where
data goes. Provisioning renders it, the lab writes it, and every service starts from
it (``plasma chainfire serve --config PATH``). Its JSON Schema is published beside
the rendered files so operators can validate hand edits.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Container
from enum import StrEnum
from ipaddress import IPv4Address
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from plasmacloud.common.durations import parse_duration

SCHEMA_VERSION: Literal[1] = 1
MAX_FRONTENDS = 64  # Chainfire's frontend worker processes per member
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME_RE = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")


class ConfigError(ValueError):
    """A configuration file is missing, unreadable or invalid; the message says how to fix it."""


class Role(StrEnum):
    CONTROL_PLANE = "control-plane"
    WORKER = "worker"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServicePorts(_Strict):
    """Ports of every PlasmaCloud service on one node (the defaults are the real ones)."""

    chainfire_client: int = Field(2379, ge=1, le=65535)
    chainfire_peer: int = Field(2380, ge=1, le=65535)
    chainfire_metrics: int = Field(2381, ge=1, le=65535)
    flaredb_http: int = Field(4001, ge=1, le=65535)
    flaredb_raft: int = Field(4002, ge=1, le=65535)
    iam_http: int = Field(8443, ge=1, le=65535)

    @model_validator(mode="after")
    def _distinct(self) -> ServicePorts:
        seen: dict[int, str] = {}
        for name, port in self.model_dump().items():
            if port in seen:
                raise ValueError(
                    f"ports.{name} and ports.{seen[port]} are both {port}; "
                    "every service needs its own port"
                )
            seen[port] = name
        return self


class PeerConfig(_Strict):
    """One member of the cluster as its peers see it (the node itself is listed too)."""

    node_id: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9][a-z0-9-]*$")
    hostname: str
    ip: IPv4Address
    ports: ServicePorts = ServicePorts()

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, v: str) -> str:
        if not _HOSTNAME_RE.match(v):
            raise ValueError(
                f"{v!r} is not a valid hostname (lowercase letters, digits, '-' and '.')"
            )
        return v


class TLSConfig(_Strict):
    """TLS material for client and peer ports. ``enabled=False`` means plain TCP."""

    enabled: bool = True
    ca_file: Path = Path("/etc/nixos/secrets/ca.crt")
    cert_file: Path = Path("/etc/nixos/secrets/node01.crt")
    key_file: Path = Path("/etc/nixos/secrets/node01.key")
    client_cert_auth: bool = True


class RaftTiming(_Strict):
    """Raft timing of the node's consensus groups (Chainfire and FlareDB).

    The defaults suit real machines and the process lab; slow hosts (emulated VMs, a
    loaded box) need longer elections, or followers time out between heartbeats that
    arrived late and the cluster keeps changing leaders.
    """

    heartbeat_ms: int = Field(50, ge=1, le=60_000, description="leader heartbeat interval")
    election_timeout_ms: tuple[int, int] = Field(
        (300, 600),
        description="[min, max]: a follower starts an election after a random timeout in it",
    )

    @model_validator(mode="after")
    def _sane(self) -> RaftTiming:
        lo, hi = self.election_timeout_ms
        if not 1 <= lo < hi <= 600_000:
            raise ValueError(
                f"raft.election_timeout_ms is [{lo}, {hi}]; give [min, max] with "
                "1 <= min < max <= 600000 (the spread keeps nodes from timing out together)"
            )
        if self.heartbeat_ms * 2 > lo:
            raise ValueError(
                f"raft.heartbeat_ms ({self.heartbeat_ms}) must be at most half of "
                f"raft.election_timeout_ms's min ({lo}), or followers start elections "
                "between two heartbeats of a healthy leader"
            )
        return self

    @property
    def heartbeat_s(self) -> float:
        return self.heartbeat_ms / 1000

    @property
    def election_timeout_s(self) -> tuple[float, float]:
        return self.election_timeout_ms[0] / 1000, self.election_timeout_ms[1] / 1000


class Compaction(_Strict):
    """Chainfire's automatic history compaction, with etcd's two modes and their words.

    ``periodic``: keep ``retention`` of time (``1h``, ``30m``; a bare number is hours, as
    in etcd); ``revision``: keep the newest ``retention`` revisions. ``"0"`` turns it off
    (etcd's default). On by default here (one hour): without it the history, and the
    database, only grow until the space alarm stops every write.
    """

    mode: Literal["periodic", "revision"] = "periodic"
    retention: str = "1h"

    @model_validator(mode="after")
    def _parse(self) -> Compaction:
        if self.mode == "revision":
            if not self.retention.isdigit():
                raise ValueError(
                    f"auto_compaction.retention is {self.retention!r}; with mode revision "
                    "give the number of revisions to keep, like 10000 (0: off)"
                )
        else:
            self.period_s  # noqa: B018  # raises naming the expected form
        return self

    @property
    def enabled(self) -> bool:
        """Whether anything is compacted ("0", "0h" and "0s" turn it off, as in etcd)."""
        return (self.revisions if self.mode == "revision" else self.period_s) > 0

    @property
    def revisions(self) -> int:
        """Revisions to keep (mode revision)."""
        return int(self.retention)

    @property
    def period_s(self) -> float:
        """Seconds of history to keep (mode periodic)."""
        if self.retention.replace(".", "", 1).isdigit():
            return float(self.retention) * 3600.0
        try:
            return parse_duration(self.retention)
        except ValueError:
            raise ValueError(
                f"auto_compaction.retention is {self.retention!r}; write a duration like 1h, "
                "30m or 1h30m (a bare number is hours), or 0 to turn it off"
            ) from None


class ChainfireOptions(_Strict):
    """Chainfire settings that are the cluster's, not one node's."""

    auto_compaction: Compaction = Field(default_factory=Compaction)
    # worker processes serving the client port (`plasma chainfire serve --frontends`);
    # 0 serves it from the member's own process; "auto": see frontend_workers
    frontends: Annotated[int, Field(ge=0, le=MAX_FRONTENDS)] | Literal["auto"] = 0

    def frontend_workers(self) -> int:
        """The workers ``frontends`` means on this machine. "auto" is one per core this
        process may run on (its CPU affinity, so taskset and cpusets count) less the one
        the member's own thread (Raft and the store) needs."""
        if self.frontends == "auto":
            return max(0, min(MAX_FRONTENDS, len(os.sched_getaffinity(0)) - 1))
        return self.frontends


class FlareDBOptions(_Strict):
    """FlareDB settings that are the cluster's, not one node's."""

    # rqlite's -auto-vacuum-int: how often the leader VACUUMs the database; "0" (rqlite's
    # default) is off. The VACUUM goes through the log, so every replica runs it at the
    # same entry (it may renumber rowids of tables without an INTEGER PRIMARY KEY).
    auto_vacuum_interval: str = "0"

    @field_validator("auto_vacuum_interval")
    @classmethod
    def _interval(cls, v: str) -> str:
        try:
            parse_duration(v)
        except ValueError:
            raise ValueError(
                f"flaredb.auto_vacuum_interval is {v!r}; write a duration like 24h or 168h "
                "(a week), or 0 to turn scheduled VACUUM off"
            ) from None
        return v

    @property
    def vacuum_interval_s(self) -> float:
        """Seconds between scheduled VACUUMs (0: none)."""
        return parse_duration(self.auto_vacuum_interval)


class NodeConfig(_Strict):
    """Everything one node's services need; serialised as ``cluster-config.json``."""

    schema_version: Literal[1] = SCHEMA_VERSION
    cluster_name: str = "plasmacloud"
    node_id: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9][a-z0-9-]*$")
    hostname: str
    ip: IPv4Address
    role: Role = Role.CONTROL_PLANE
    bootstrap: bool = True
    peers: list[PeerConfig] = Field(min_length=1)
    ports: ServicePorts = ServicePorts()
    tls: TLSConfig = TLSConfig()
    data_dir: Path = Path("/var/lib/plasmacloud")
    hosts: dict[str, IPv4Address] = Field(
        default_factory=dict,
        description="hostname -> IP used before DNS, so peers resolve without a DNS server",
    )
    bind_address: IPv4Address | None = Field(
        None, description="address services bind to; defaults to `ip`"
    )
    # model_validate({}): mypy (no pydantic plugin) does not see RaftTiming's defaults.
    raft: RaftTiming = Field(default_factory=lambda: RaftTiming.model_validate({}))
    chainfire: ChainfireOptions = Field(default_factory=ChainfireOptions)
    flaredb: FlareDBOptions = Field(default_factory=FlareDBOptions)
    sealing_key_file: Path | None = Field(
        None,
        description="32-byte key (base64, mode 0400) that seals IAM's signing keys at rest; "
        "the same file on every node. None: they are stored in clear",
    )
    # the file this config was loaded from (None: built in memory), for reloaded()
    _source: Path | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _consistent(self) -> NodeConfig:
        ids = [p.node_id for p in self.peers]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"peers: node_id {sorted(dup)} listed more than once")
        me = [p for p in self.peers if p.node_id == self.node_id]
        if not me:
            raise ValueError(
                f"peers: this node ({self.node_id}) must be listed among the peers "
                "(the peer list is the whole cluster, this node included)"
            )
        if me[0].ip != self.ip or me[0].hostname != self.hostname:
            raise ValueError(
                f"peers: the entry for {self.node_id} says {me[0].hostname}/{me[0].ip} "
                f"but the node itself is {self.hostname}/{self.ip}; make them agree"
            )
        return self

    def __eq__(self, other: object) -> bool:
        # the same settings are the same config, whichever file (if any) they came from
        return isinstance(other, NodeConfig) and self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]  # a list of peers: not hashable anyway

    # -- derived views -------------------------------------------------------------

    @property
    def listen_host(self) -> str:
        """Address every service of this node binds to."""
        return str(self.bind_address or self.ip)

    @property
    def me(self) -> PeerConfig:
        return next(p for p in self.peers if p.node_id == self.node_id)

    def peer(self, node_id: str) -> PeerConfig:
        for p in self.peers:
            if p.node_id == node_id:
                return p
        raise KeyError(node_id)

    def resolve(self, hostname: str) -> str:
        """Resolve a peer hostname: the config's hosts map and peer list first, then DNS.

        The seed's cluster failed to bootstrap because peers were named by hostnames that
        nothing resolved; the config carries its own answer so DNS is never required.
        """
        known = self._known_address(hostname)
        if known is None and (fresh := self.reloaded()) is not self:
            # a member added after this node started: its file was re-rendered with it
            known = fresh._known_address(hostname)
        if known is not None:
            return known
        try:
            return socket.gethostbyname(hostname)
        except OSError as exc:
            raise ConfigError(
                f"cannot resolve {hostname!r}: not in the config's hosts map, not a peer, "
                f"and DNS said {exc}; add it to `hosts` in cluster-config.json"
            ) from exc

    def _known_address(self, hostname: str) -> str | None:
        if hostname in self.hosts:
            return str(self.hosts[hostname])
        for p in self.peers:
            if hostname in (p.hostname, p.node_id):
                return str(p.ip)
        return None

    def reloaded(self) -> NodeConfig:
        """This node's config as its file says now (self when built in memory, unchanged,
        or now unreadable). Adding a member re-renders every node's file with it; running
        services read it again to reach and name the new member, without a restart."""
        if self._source is None:
            return self
        try:
            stamp = self._source.stat().st_mtime_ns
        except OSError:
            return self
        cached = _RELOADED.get(self._source)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            fresh = NodeConfig.load(self._source)
        except ConfigError:  # being rewritten, or broken by a hand edit: keep the last read
            return self if cached is None else cached[1]
        if fresh.node_id != self.node_id:
            return self
        _RELOADED[self._source] = (stamp, fresh)
        return fresh

    @property
    def source(self) -> Path | None:
        """The file this config was loaded from (None when built in memory)."""
        return self._source

    def data_path(self, service: str) -> Path:
        """Data directory of one service on this node (created by the service)."""
        return self.data_dir / service

    # -- files -----------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path | str) -> NodeConfig:
        """Read and validate a ``cluster-config.json``; errors name the field and the file."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: no such file; render it with `plasma render`") from exc
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
        try:
            config = cls.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(f"{path}: {format_validation_error(exc)}") from exc
        config._source = path.absolute()
        return config

    def dump(self, path: Path | str) -> None:
        """Write this config as pretty, stable JSON."""
        Path(path).write_text(self.model_dump_json(indent=2) + "\n")


class ClusterNodeIds(Container[str]):
    """The cluster's node ids as a node's config names them now (``node_id in ids``): a
    node added after this one started is found by re-reading its file, so its
    certificate is a cluster node's there without a restart."""

    def __init__(self, config: NodeConfig) -> None:
        self._config = config

    def __contains__(self, node_id: object) -> bool:
        if any(p.node_id == node_id for p in self._config.peers):
            return True
        self._config = self._config.reloaded()
        return any(p.node_id == node_id for p in self._config.peers)


# path -> (mtime_ns, config) of the files reloaded() read last
_RELOADED: dict[Path, tuple[int, NodeConfig]] = {}


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: ``field.path: message``."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"{loc}: {err['msg']}")
    return "; ".join(lines)


def node_config_schema() -> dict[str, object]:
    """The published JSON Schema of ``cluster-config.json``."""
    schema = NodeConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "PlasmaCloud cluster-config.json"
    return schema
