"""The cluster spec (``cluster.yaml``): the one file an operator writes.

Everything else (PKI, node configs, Nix, netboot artifacts, runbook) is rendered from
it. Loading reports every problem at once, each naming the YAML line, the node and
the field, and saying how to fix it. Shape errors (a bad IP, a missing field) come from
pydantic; cluster-wide consistency (duplicate MACs, IPs outside the network, ...) is
checked by :func:`consistency_issues` so preflight can report the same findings under
stable check ids.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from plasmacloud.common.config import (
    ChainfireOptions,
    FlareDBOptions,
    RaftTiming,
    Role,
    ServicePorts,
)

SECRETS_DIR = Path("/etc/nixos/secrets")
_MAC_RE = re.compile(r"^([0-9a-f]{2})([:-][0-9a-f]{2}){5}$")
_SSH_KEY_RE = re.compile(
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh.com)"
    r" [A-Za-z0-9+/]+={0,3}( .*)?$"
)
_NAME_RE = r"^[a-z0-9][a-z0-9-]*$"
_DISK_RE = re.compile(r"^/dev/[A-Za-z0-9._/:-]+$")


class SpecError(ValueError):
    """``cluster.yaml`` is unreadable or invalid; ``issues`` lists every problem."""

    def __init__(self, path: Path | str, issues: list[SpecIssue]) -> None:
        self.path = Path(path)
        self.issues = issues
        super().__init__(f"{path}: {len(issues)} problem(s):\n" + "\n".join(map(str, issues)))


@dataclass(frozen=True)
class SpecIssue:
    """One problem in the spec: where, what, and how to fix it."""

    code: str  # stable short name, e.g. "duplicate-mac"; preflight maps it to a check id
    where: str  # "line 14: nodes[1] (node02).mac" or "cluster.yaml"
    message: str
    fix: str

    def __str__(self) -> str:
        return f"  {self.where}: {self.message} -> fix: {self.fix}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NetworkSpec(_Strict):
    """The nodes' L2/L3 network."""

    cidr: IPv4Network = IPv4Network("192.168.100.0/24")
    gateway: IPv4Address | None = IPv4Address("192.168.100.1")
    dns: list[IPv4Address] = Field(default_factory=lambda: [IPv4Address("192.168.100.1")])
    interface: str = Field(
        default="enp0s2", pattern=r"^[A-Za-z0-9._-]{1,15}$", description="NIC name on the nodes"
    )


class DiskSpec(_Strict):
    """A disk of a node. ``by_id`` (``/dev/disk/by-id/...``) is preferred: kernel names
    like ``/dev/sda`` can move between boots, and wiping the wrong disk is the classic
    bare-metal install accident."""

    device: str = "/dev/vda"
    by_id: str | None = None
    root_size: str = Field(default="80G", pattern=r"^[0-9]+[KMGT]$")
    layout: Literal["lvm", "plain"] = Field(
        default="lvm",
        description="lvm: ESP + LVM (root, data); plain: ESP + root + data partitions",
    )

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not _DISK_RE.match(v):
            raise ValueError(f"{v!r} is not a device path; write e.g. /dev/vda")
        return v

    @field_validator("by_id")
    @classmethod
    def _by_id(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/dev/disk/by-id/"):
            raise ValueError(
                f"{v!r} must start with /dev/disk/by-id/ (see `ls -l /dev/disk/by-id`)"
            )
        return v

    @property
    def path(self) -> str:
        """The path the installer should use: the stable by-id path when known."""
        return self.by_id or self.device


class SSHTarget(_Strict):
    """Where to reach a machine over SSH (``ssh://user@host:port``)."""

    user: str = "root"
    host: str
    port: int = Field(default=22, ge=1, le=65535)

    @classmethod
    def parse(cls, url: str) -> SSHTarget:
        """Parse ``ssh://user@host:port`` (user and port optional)."""
        parts = urlsplit(url if "://" in url else f"ssh://{url}")
        if parts.scheme != "ssh" or not parts.hostname:
            raise ValueError(f"{url!r} is not an SSH target; write ssh://root@host:22")
        return cls(user=parts.username or "root", host=parts.hostname, port=parts.port or 22)

    def __str__(self) -> str:
        return f"ssh://{self.user}@{self.host}:{self.port}"


class NodeSpec(_Strict):
    """One machine."""

    node_id: str = Field(min_length=1, max_length=63, pattern=_NAME_RE)
    hostname: str | None = Field(default=None, pattern=_NAME_RE, description="defaults to node_id")
    mac: str
    ip: IPv4Address
    role: Role = Role.CONTROL_PLANE
    bootstrap: bool = True
    disks: list[DiskSpec] = Field(min_length=1)
    ssh: str | None = Field(
        default=None, description="ssh://user@host:port; defaults to root@ip:22"
    )

    @field_validator("mac")
    @classmethod
    def _mac(cls, v: str) -> str:
        v = v.strip().lower()
        if not _MAC_RE.match(v):
            raise ValueError(
                f"{v!r} is not a MAC address; write six hex pairs like 52:54:00:00:01:01"
            )
        return v.replace("-", ":")

    @field_validator("disks")
    @classmethod
    def _disks(cls, v: list[DiskSpec]) -> list[DiskSpec]:
        if len(v) > 1 and v[0].layout == "plain":
            raise ValueError("layout plain uses one disk; use layout: lvm to span several disks")
        return v

    @field_validator("ssh")
    @classmethod
    def _ssh(cls, v: str | None) -> str | None:
        if v is not None:
            SSHTarget.parse(v)
        return v

    @property
    def host(self) -> str:
        """The node's hostname (``node_id`` unless given)."""
        return self.hostname or self.node_id

    @property
    def target(self) -> SSHTarget:
        """How to reach the machine over SSH."""
        return SSHTarget.parse(self.ssh) if self.ssh else SSHTarget(host=str(self.ip))

    @property
    def mac_hyphen(self) -> str:
        """MAC as iPXE's ``${mac:hexhyp}`` prints it (file names of per-MAC scripts)."""
        return self.mac.replace(":", "-")


class NetbootSpec(_Strict):
    """The provisioning server on the nodes' network."""

    server_ip: IPv4Address = IPv4Address("192.168.100.1")
    http_port: int = Field(default=8080, ge=1, le=65535)
    interface: str = Field(default="br-plasma", pattern=r"^[A-Za-z0-9._-]{1,15}$")
    dhcp: Literal["full", "proxy"] = "full"
    dhcp_range: tuple[IPv4Address, IPv4Address] | None = Field(
        default=None,
        description="dynamic pool for unknown machines (full mode); none = pinned only",
    )


class DeploySpec(_Strict):
    """How the nodes get their operating system."""

    method: Literal["nixos-anywhere", "image", "ssh"] = "nixos-anywhere"
    nixos_release: str = Field(default="25.11", pattern=r"^[0-9]{2}\.[0-9]{2}$")
    source: str = Field(
        default="path:./plasmacloud-src",
        description="flake URL of the PlasmaCloud source tree the nodes build from",
    )


class ClusterSpec(_Strict):
    """The whole ``cluster.yaml``."""

    name: str = Field(default="plasmacloud", pattern=_NAME_RE)
    domain: str | None = Field(default=None, pattern=r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")
    network: NetworkSpec = Field(default_factory=NetworkSpec)
    ssh_authorized_keys: list[str] = Field(min_length=1)
    # model_validate({}): mypy (no pydantic plugin) does not see ServicePorts' defaults.
    ports: ServicePorts = Field(default_factory=lambda: ServicePorts.model_validate({}))
    # one Raft timing for the whole cluster (every voter must agree on it)
    raft: RaftTiming = Field(default_factory=lambda: RaftTiming.model_validate({}))
    # Chainfire settings every member shares (auto-compaction)
    chainfire: ChainfireOptions = Field(default_factory=ChainfireOptions)
    # FlareDB settings every member shares (scheduled VACUUM)
    flaredb: FlareDBOptions = Field(default_factory=FlareDBOptions)
    netboot: NetbootSpec = Field(default_factory=NetbootSpec)
    deploy: DeploySpec = Field(default_factory=DeploySpec)
    nodes: list[NodeSpec] = Field(min_length=1)

    @field_validator("ssh_authorized_keys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        for key in v:
            if not _SSH_KEY_RE.match(key.strip()):
                raise ValueError(
                    f"{key[:30]!r}... is not an OpenSSH public key; paste one line of "
                    "~/.ssh/id_ed25519.pub"
                )
        return [k.strip() for k in v]

    def node(self, node_id: str) -> NodeSpec:
        """The node with this id (KeyError if none)."""
        for n in self.nodes:
            if n.node_id == node_id:
                return n
        raise KeyError(node_id)

    @property
    def control_plane(self) -> list[NodeSpec]:
        """Nodes that run Chainfire, FlareDB and IAM (the Raft voters)."""
        return [n for n in self.nodes if n.role == Role.CONTROL_PLANE]

    def fqdn(self, node: NodeSpec) -> str | None:
        """``host.domain`` when the cluster has a domain."""
        return f"{node.host}.{self.domain}" if self.domain else None


# -- loading ---------------------------------------------------------------------------

_FIX_BY_TYPE = {
    "missing": "add the field",
    "extra_forbidden": "remove it or check its spelling (see `plasma init` for the fields)",
    "ip_v4_address": "write a dotted quad like 192.168.100.11",
    "ip_v4_network": "write a network like 192.168.100.0/24 (host bits zero)",
    "string_pattern_mismatch": "use lowercase letters, digits and '-'",
    "too_short": "add at least one entry",
    "int_parsing": "write a whole number",
    "bool_parsing": "write true or false",
    "literal_error": "use one of the allowed values",
    "enum": "use one of the allowed values",
    "greater_than_equal": "use a value in range",
    "less_than_equal": "use a value in range",
}


def _line_of(root: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """1-based YAML line of the deepest node along ``loc`` (None without a document)."""
    node, line = root, None
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        nxt: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == part:
                    line, nxt = k.start_mark.line + 1, v
                    break
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            nxt = node.value[part]
        node = nxt
    if node is not None:
        line = node.start_mark.line + 1
    return line


def _where(raw: Any, loc: tuple[int | str, ...], line: int | None) -> str:
    """``line N: nodes[1] (node02).mac`` from a pydantic location."""
    text, cur = "", raw
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
            cur = cur[part] if isinstance(cur, list) and part < len(cur) else None
            if isinstance(cur, dict) and "node_id" in cur and text.startswith("nodes"):
                text += f" ({cur['node_id']})"
        else:
            text += f".{part}" if text else str(part)
            cur = cur.get(part) if isinstance(cur, dict) else None
    text = text or "(top level)"
    return f"line {line}: {text}" if line else text


def _issues_from_validation(
    exc: ValidationError, raw: Any, root: yaml.Node | None
) -> list[SpecIssue]:
    issues = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        fix = _FIX_BY_TYPE.get(err["type"], "see the comments in `plasma init`'s sample")
        if "; " in msg and err["type"] == "value_error":
            msg, fix = msg.split("; ", 1)
        issues.append(SpecIssue("invalid-field", _where(raw, loc, _line_of(root, loc)), msg, fix))
    return issues


def parse_spec(text: str, path: Path | str = "cluster.yaml") -> tuple[ClusterSpec, list[SpecIssue]]:
    """Validate YAML text; returns the spec and its consistency issues (SpecError on shape)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        issue = SpecIssue(
            "yaml", where, f"not valid YAML: {exc.problem or exc}", "fix the YAML syntax there"
        )
        raise SpecError(path, [issue]) from exc
    if not isinstance(raw, dict):
        issue = SpecIssue(
            "yaml", str(path), "the file must be a YAML mapping", "start from `plasma init`"
        )
        raise SpecError(path, [issue])
    try:
        spec = ClusterSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(path, _issues_from_validation(exc, raw, root)) from exc
    lines = {i: _line_of(root, ("nodes", i)) for i in range(len(spec.nodes))}
    return spec, consistency_issues(spec, lines)


def load_spec(path: Path | str, strict: bool = True) -> ClusterSpec:
    """Read ``cluster.yaml``. With ``strict`` any consistency issue raises SpecError too."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        issue = SpecIssue("missing", str(path), "no such file", "create one with `plasma init`")
        raise SpecError(path, [issue]) from exc
    spec, issues = parse_spec(text, path)
    if strict and issues:
        raise SpecError(path, issues)
    return spec


def consistency_issues(
    spec: ClusterSpec, lines: dict[int, int | None] | None = None
) -> list[SpecIssue]:
    """Cluster-wide problems pydantic cannot see field by field."""
    lines = lines or {}
    issues: list[SpecIssue] = []

    def where(i: int, field: str) -> str:
        line = lines.get(i)
        prefix = f"line {line}: " if line else ""
        return f"{prefix}nodes[{i}] ({spec.nodes[i].node_id}).{field}"

    for field, code, key in (
        ("node_id", "duplicate-node-id", lambda n: n.node_id),
        ("hostname", "duplicate-hostname", lambda n: n.host),
        ("ip", "duplicate-ip", lambda n: str(n.ip)),
        ("mac", "duplicate-mac", lambda n: n.mac),
    ):
        first: dict[str, int] = {}
        for i, n in enumerate(spec.nodes):
            value = key(n)
            if value in first:
                j = first[value]
                issues.append(
                    SpecIssue(
                        code,
                        where(i, field),
                        f"{field} {value} is also used by nodes[{j}] ({spec.nodes[j].node_id})",
                        f"give every node its own {field}",
                    )
                )
            else:
                first[value] = i
    net = spec.network
    for i, n in enumerate(spec.nodes):
        if n.ip not in net.cidr:
            issues.append(
                SpecIssue(
                    "ip-outside-network",
                    where(i, "ip"),
                    f"{n.ip} is outside network.cidr {net.cidr}",
                    "pick an address inside the network or fix network.cidr",
                )
            )
        if n.ip in (net.cidr.network_address, net.cidr.broadcast_address, net.gateway):
            issues.append(
                SpecIssue(
                    "ip-reserved",
                    where(i, "ip"),
                    f"{n.ip} is the network, broadcast or gateway address",
                    "pick a host address",
                )
            )
        if n.ip == spec.netboot.server_ip:
            issues.append(
                SpecIssue(
                    "ip-reserved",
                    where(i, "ip"),
                    f"{n.ip} is the netboot server's address",
                    "pick another address or change netboot.server_ip",
                )
            )
    if net.gateway is not None and net.gateway not in net.cidr:
        issues.append(
            SpecIssue(
                "gateway-outside-network",
                "network.gateway",
                f"{net.gateway} is outside {net.cidr}",
                "use a gateway inside network.cidr",
            )
        )
    nb = spec.netboot
    if nb.server_ip not in net.cidr:
        issues.append(
            SpecIssue(
                "netboot-network",
                "netboot.server_ip",
                f"{nb.server_ip} is outside {net.cidr}; PXE clients could not reach it",
                "use the provisioning host's address on the nodes' network",
            )
        )
    if nb.dhcp_range is not None:
        lo, hi = nb.dhcp_range
        inside = [n.node_id for n in spec.nodes if lo <= n.ip <= hi]
        if lo not in net.cidr or hi not in net.cidr or lo > hi:
            issues.append(
                SpecIssue(
                    "netboot-network",
                    "netboot.dhcp_range",
                    f"{lo}-{hi} is not an ascending range inside {net.cidr}",
                    "give a first and last address inside network.cidr",
                )
            )
        elif inside:
            issues.append(
                SpecIssue(
                    "netboot-network",
                    "netboot.dhcp_range",
                    f"{lo}-{hi} contains the pinned address(es) of {', '.join(inside)}",
                    "keep the dynamic pool clear of node addresses",
                )
            )
    if not spec.control_plane:
        issues.append(
            SpecIssue(
                "no-control-plane",
                "nodes",
                "no node has role control-plane",
                "make at least one (better three) nodes control-plane",
            )
        )
    return issues
