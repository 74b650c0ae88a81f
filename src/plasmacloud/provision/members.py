"""``plasma provision add-node`` / ``replace-node``: a machine into ``cluster.yaml`` and out
to its files.

Adding writes the node into the spec with ``bootstrap: false`` (it joins the running
cluster instead of forming one), issues its certificate from the cluster CA and renders
the whole tree again: its own files, and every other node's ``cluster-config.json`` with
it among the peers (a running member re-reads its file to reach it). Replacing keeps the
name for a new machine (new MAC and/or IP, a new key). Joining the running cluster is
``plasma cluster add-node`` once the machine runs (``remove-node`` first to replace).
Preflight's quorum findings say whether the new size tolerates more failures.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import yaml

from plasmacloud.common.config import Role
from plasmacloud.common.files import write_atomic
from plasmacloud.provision import certs, pki
from plasmacloud.provision.findings import Finding
from plasmacloud.provision.layout import OutputLayout
from plasmacloud.provision.preflight import check_bootstrap, check_quorum
from plasmacloud.provision.render import Written, render
from plasmacloud.provision.spec import ClusterSpec, SpecError, SpecIssue, parse_spec


@dataclass(frozen=True)
class NodeChange:
    """What add-node or replace-node changed."""

    spec: ClusterSpec
    certificate: Path
    rendered: list[Written]
    findings: list[Finding]  # preflight's quorum and bootstrap checks of the new spec
    comments_kept: bool  # False: cluster.yaml was rewritten without its comments


def _issue(path: Path, message: str, fix: str) -> SpecError:
    return SpecError(path, [SpecIssue("membership", str(path), message, fix)])


def _appended(text: str, raw: dict[str, Any], entry: dict[str, Any]) -> str | None:
    """``text`` with ``entry`` appended to a ``nodes:`` block list that ends the file (as
    `plasma init` writes it), so every comment stays; None if the file is shaped
    otherwise or the result would not read back as exactly that."""
    head = re.search(r"^nodes:[ \t]*(#.*)?$", text, re.MULTILINE)
    if head is None:
        return None
    rest = text[head.end() :]
    item = re.search(r"^([ \t]*)- ", rest, re.MULTILINE)
    if item is None or re.search(r"^[^\s#]", rest, re.MULTILINE):
        return None  # no block list, or another top-level key follows
    dumped = yaml.safe_dump([entry], sort_keys=False, default_flow_style=False)
    block = "".join(item.group(1) + line for line in dumped.splitlines(keepends=True))
    candidate = text.rstrip("\n") + "\n" + block
    expected = {**raw, "nodes": [*raw["nodes"], entry]}
    return candidate if yaml.safe_load(candidate) == expected else None


def _write(
    path: Path, text: str, out: Path, node_id: str, force_cert: bool, kept: bool
) -> NodeChange:
    """Validate the new spec text, write it, issue the node's certificate, render."""
    spec, issues = parse_spec(text, path)
    if issues:
        raise SpecError(path, issues)
    layout = OutputLayout(out)
    pki.load_ca(layout.pki_dir)  # PKIError (`plasma pki init` first) before anything changes
    write_atomic(path, text.encode())
    (issued,) = certs.issue_cluster(spec, layout, [node_id], force=force_cert)
    rendered = render(spec, out, text)
    findings = check_quorum(spec) + check_bootstrap(spec)
    return NodeChange(spec, issued.issued.cert_path, rendered, findings, kept)


def add_node(spec_path: Path, out: Path, node_id: str, mac: str, ip: IPv4Address) -> NodeChange:
    """Add a control-plane node that joins (bootstrap false), its disks laid out as the
    last control-plane node's; certificate issued (the CA must exist), tree rendered."""
    text = spec_path.read_text()
    spec, _ = parse_spec(text, spec_path)
    if any(n.node_id == node_id for n in spec.nodes):
        raise _issue(
            spec_path,
            f"{node_id} is in the spec already",
            "pick a new name, or `plasma provision replace-node` for a new machine",
        )
    raw = yaml.safe_load(text)
    template = next(
        raw["nodes"][i] for i in reversed(range(len(spec.nodes)))
        if spec.nodes[i].role == Role.CONTROL_PLANE
    )  # fmt: skip
    entry = {
        "node_id": node_id,
        "hostname": node_id,
        "mac": mac,
        "ip": str(ip),
        "role": Role.CONTROL_PLANE.value,
        "bootstrap": False,
        "disks": template["disks"],
    }
    appended = _appended(text, raw, entry)
    if appended is None:
        raw["nodes"].append(entry)
        appended = yaml.safe_dump(raw, sort_keys=False)
    return _write(spec_path, appended, out, node_id, False, appended.startswith(text.rstrip()))


def replace_node(
    spec_path: Path, out: Path, node_id: str, mac: str | None, ip: IPv4Address | None
) -> NodeChange:
    """The same node name on a new machine: new MAC/IP (when given), bootstrap false (it
    joins the cluster the old one left), a new key and certificate, tree rendered."""
    text = spec_path.read_text()
    spec, _ = parse_spec(text, spec_path)
    index = next((i for i, n in enumerate(spec.nodes) if n.node_id == node_id), None)
    if index is None:
        raise _issue(
            spec_path, f"no node {node_id} in the spec", "`plasma provision add-node` adds one"
        )
    raw = yaml.safe_load(text)
    node = raw["nodes"][index]
    node.update({"bootstrap": False, **({"mac": mac} if mac else {})})
    if ip is not None:
        node["ip"] = str(ip)
        node.pop("ssh", None)  # it named the old machine
    return _write(spec_path, yaml.safe_dump(raw, sort_keys=False), out, node_id, True, False)
