"""Provisioning commands: init, render, pki, preflight, netboot, provision, agent, deploy."""

from __future__ import annotations

import json
import logging
import shutil
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from plasmacloud.common.errors import EXIT_FAILURE, EXIT_UNAVAILABLE, EXIT_USAGE

if TYPE_CHECKING:
    from plasmacloud.provision.findings import Finding
    from plasmacloud.provision.layout import OutputLayout
    from plasmacloud.provision.members import NodeChange
    from plasmacloud.provision.spec import ClusterSpec
    from plasmacloud.provision.states import StateFile

SpecOpt = Annotated[Path, typer.Option("--spec", "-s", help="the cluster spec (cluster.yaml)")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="output directory of `plasma render`")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print machine-readable JSON")]
NodesOpt = Annotated[
    list[str] | None, typer.Option("--node", "-n", help="only this node (repeatable)")
]
DEFAULT_SPEC = Path("cluster.yaml")
DEFAULT_OUT = Path("out")

netboot_app = typer.Typer(
    help="Netboot: HTTP (iPXE, images, bundles) + dnsmasq.", no_args_is_help=True
)
provision_app = typer.Typer(help="Provisioning progress of each node.", no_args_is_help=True)
pki_app = typer.Typer(help="Cluster TLS: CA, node and client certificates.", no_args_is_help=True)


def _spec(path: Path) -> ClusterSpec:
    """Load the spec or exit 2 with every problem listed."""
    from plasmacloud.provision.spec import SpecError, load_spec

    try:
        return load_spec(path)
    except SpecError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(EXIT_USAGE) from exc


def print_findings(findings: list[Finding], as_json: bool, what: str) -> None:
    """Findings as JSON or as readable lines with a summary, then exit 1 on any error."""
    from plasmacloud.provision.findings import Severity, has_errors

    if as_json:
        payload = {"ok": not has_errors(findings), "findings": [f.model_dump() for f in findings]}
        typer.echo(json.dumps(payload, indent=2))
    else:
        for f in findings:
            where = f" [{f.node}]" if f.node else ""
            typer.echo(f"{f.severity.value.upper():7} {f.id}{where}: {f.message}")
            typer.echo(f"        fix: {f.fix}")
        errors = sum(f.severity == Severity.ERROR for f in findings)
        warnings = len(findings) - errors
        verdict = "FAILED" if errors else "OK"
        typer.echo(f"{what} {verdict}: {errors} error(s), {warnings} warning(s)")
    if has_errors(findings):
        raise typer.Exit(EXIT_FAILURE)


def init(
    spec: SpecOpt = DEFAULT_SPEC,
    ssh_key: Annotated[
        str | None, typer.Option(help="public key line (default: ~/.ssh/id_*.pub)")
    ] = None,
    force: Annotated[bool, typer.Option(help="overwrite an existing spec")] = False,
) -> None:
    """Write a commented sample cluster.yaml (the seed's 3-node cluster)."""
    from plasmacloud.provision.sample import default_ssh_key, sample_spec

    if spec.exists() and not force:
        typer.echo(f"{spec} exists; pass --force to overwrite it", err=True)
        raise typer.Exit(EXIT_USAGE)
    spec.write_text(sample_spec(ssh_key or default_ssh_key()))
    typer.echo(f"wrote {spec}; edit it, then `plasma render --spec {spec}`")


def render_cmd(
    spec: SpecOpt = DEFAULT_SPEC, out: OutOpt = DEFAULT_OUT, as_json: JsonOpt = False
) -> None:
    """Render every node's config, Nix files, hosts, iPXE, dnsmasq and the runbook."""
    from plasmacloud.provision.render import render

    cluster = _spec(spec)
    written = render(cluster, out, spec.read_text())
    if as_json:
        typer.echo(json.dumps([{"path": str(w.path), "status": w.status} for w in written]))
        return
    for w in written:
        if w.status != "unchanged":
            typer.echo(f"{w.status:8} {w.path}")
    changed = sum(w.status != "unchanged" for w in written)
    typer.echo(f"rendered {len(written)} files into {out} ({changed} changed)")


@pki_app.command("init")
def pki_init(
    spec: SpecOpt = DEFAULT_SPEC,
    out: OutOpt = DEFAULT_OUT,
    days: Annotated[int, typer.Option(help="node certificate lifetime")] = 365,
) -> None:
    """Create the CA (if absent) and issue every missing or outdated certificate."""
    from plasmacloud.provision import pki
    from plasmacloud.provision.layout import OutputLayout

    cluster = _spec(spec)
    layout = OutputLayout(out)
    ca = pki.init_ca(layout.pki_dir, f"PlasmaCloud CA ({cluster.name})")
    typer.echo(f"CA {ca.cert_path}")
    _issue(cluster, layout, None, False, days)


def _issue(
    cluster: ClusterSpec, layout: OutputLayout, nodes: list[str] | None, force: bool, days: int
) -> None:
    from plasmacloud.provision import certs, pki

    unknown = set(nodes or []) - {n.node_id for n in cluster.nodes}
    if unknown:
        typer.echo(f"unknown node(s) {', '.join(sorted(unknown))}", err=True)
        raise typer.Exit(EXIT_USAGE)
    try:
        results = certs.issue_cluster(cluster, layout, nodes, force=force, days=days)
    except pki.PKIError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(EXIT_FAILURE) from exc
    for r in results:
        typer.echo(f"{'issued' if r.changed else 'kept':6} {r.issued.cert_path}")


@pki_app.command("issue")
def pki_issue(
    spec: SpecOpt = DEFAULT_SPEC,
    out: OutOpt = DEFAULT_OUT,
    node: NodesOpt = None,
    days: Annotated[int, typer.Option(help="node certificate lifetime")] = 365,
) -> None:
    """Issue missing or outdated node certificates (valid ones are kept)."""
    from plasmacloud.provision.layout import OutputLayout

    _issue(_spec(spec), OutputLayout(out), node, False, days)


@pki_app.command("rotate")
def pki_rotate(
    spec: SpecOpt = DEFAULT_SPEC,
    out: OutOpt = DEFAULT_OUT,
    node: NodesOpt = None,
    days: Annotated[int, typer.Option(help="node certificate lifetime")] = 365,
) -> None:
    """Reissue node certificates with new keys, valid or not."""
    from plasmacloud.provision.layout import OutputLayout

    _issue(_spec(spec), OutputLayout(out), node, True, days)


_NEXT_STEP = {
    "start": "ship every node's ca.crt, wait until all have it, then `ca-rollover promote`",
    "promote": "ship every node's certificate and ca.crt (and clients/), then `ca-rollover "
    "finish` once nothing uses a certificate of the old CA",
    "finish": "ship every node's ca.crt: the old CA is trusted nowhere",
}


@pki_app.command("ca-rollover")
def pki_ca_rollover(
    step: Annotated[str, typer.Argument(help="start, promote or finish (in this order)")],
    spec: SpecOpt = DEFAULT_SPEC,
    out: OutOpt = DEFAULT_OUT,
    days: Annotated[int, typer.Option(help="lifetime of certificates reissued at promote")] = 365,
) -> None:
    """Replace the CA with an overlap in which both are trusted (no restart, no outage)."""
    from plasmacloud.provision import certs, pki
    from plasmacloud.provision.layout import OutputLayout

    if step not in certs.ROLLOVER_STEPS:
        typer.echo(f"unknown step {step!r}: give start, promote or finish", err=True)
        raise typer.Exit(EXIT_USAGE)
    layout = OutputLayout(out)
    try:
        ca = certs.ca_rollover(_spec(spec), layout, step, days)
    except pki.PKIError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(EXIT_FAILURE) from exc
    trusted = ", ".join(c.subject.rfc4514_string() for c in ca.trusted())
    typer.echo(f"{step}: {ca.cert.subject.rfc4514_string()} signs; trusted: {trusted}")
    typer.echo(f"next: {_NEXT_STEP[step]}")


@pki_app.command("check")
def pki_check(
    spec: SpecOpt = DEFAULT_SPEC, out: OutOpt = DEFAULT_OUT, as_json: JsonOpt = False
) -> None:
    """Report missing files, expiry, SAN mismatches, permissions and key/cert mismatches."""
    from plasmacloud.provision import certs
    from plasmacloud.provision.layout import OutputLayout

    print_findings(certs.check_cluster(_spec(spec), OutputLayout(out)), as_json, "pki check")


def preflight_cmd(
    spec: SpecOpt = DEFAULT_SPEC,
    out: OutOpt = DEFAULT_OUT,
    target: Annotated[
        list[str] | None,
        typer.Option(help="check a machine: ssh://root@host:port or node01=ssh://... (repeatable)"),
    ] = None,
    all_targets: Annotated[
        bool, typer.Option(help="check every node at its spec SSH target")
    ] = False,
    identity: Annotated[str | None, typer.Option("-i", help="SSH private key")] = None,
    no_tree: Annotated[bool, typer.Option(help="check only the spec, not --out")] = False,
    list_checks: Annotated[bool, typer.Option(help="print every check id and exit")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check spec, rendered tree, certificates and (optionally) target machines."""
    from plasmacloud.provision import preflight
    from plasmacloud.provision.target import ShellFacts

    if list_checks:
        if as_json:
            typer.echo(json.dumps(preflight.CHECKS, indent=2))
        else:
            for check_id, meaning in preflight.CHECKS.items():
                typer.echo(f"{check_id:32} {meaning}")
        return
    targets = {}
    if target or all_targets:
        try:
            targets = preflight.resolve_targets(_spec(spec), target or [], all_targets)
        except (ValueError, KeyError) as exc:
            typer.echo(f"--target: {exc}", err=True)
            raise typer.Exit(EXIT_USAGE) from exc
    req = preflight.PreflightRequest(
        spec_path=spec,
        out=None if no_tree else out,
        targets=targets,
        facts=ShellFacts(identity=identity),
    )
    print_findings(preflight.run(req), as_json, "preflight")


DhcpOpt = Annotated[str | None, typer.Option(help="full | proxy (default: the spec's)")]
IfaceOpt = Annotated[
    str | None, typer.Option(help="the only interface dnsmasq serves (default: the spec's)")
]


@netboot_app.command("serve")
def netboot_serve(
    spec: SpecOpt = DEFAULT_SPEC,
    out: OutOpt = DEFAULT_OUT,
    images: Annotated[
        Path | None, typer.Option(help="dir with kernel, initrd[, cmdline] (or <node>/...)")
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="bind address (default: netboot.server_ip)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (default: netboot.http_port)")] = None,
    dnsmasq: Annotated[
        bool, typer.Option(help="also run dnsmasq (DHCP/TFTP) on --interface only")
    ] = False,
    interface: IfaceOpt = None,
    dhcp: DhcpOpt = None,
    tftp_root: Annotated[Path, typer.Option(help="holds undionly.kpxe / ipxe.efi")] = Path(
        "/var/lib/plasmacloud/tftp"
    ),
    dashboard: Annotated[
        bool,
        typer.Option(
            help="also serve `plasma dashboard` of the cluster on 127.0.0.1 (its one-time "
            "login URL is the first line printed)"
        ),
    ] = False,
) -> None:
    """Serve iPXE scripts, images and config bundles to the machines in the spec."""
    import asyncio
    import contextlib

    from plasmacloud.cli.dashboard import serving, spec_sources
    from plasmacloud.cli.validate import DEFAULT_SERVICES
    from plasmacloud.provision import netboot
    from plasmacloud.provision.dnsmasq import DnsmasqOptions
    from plasmacloud.provision.layout import OutputLayout

    cluster = _spec(spec)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    opts = (
        DnsmasqOptions(
            tftp_root=tftp_root, state_dir=out / "netboot", interface=interface, mode=dhcp
        )
        if dnsmasq
        else None
    )
    bind = host or str(cluster.netboot.server_ip)

    async def main() -> None:
        # SIGTERM/SIGINT end the server cleanly, stopping the dnsmasq it started.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        port_ = port or cluster.netboot.http_port
        beside = (
            serving(spec_sources(spec, out, DEFAULT_SERVICES))
            if dashboard
            else contextlib.nullcontext()
        )
        async with beside:
            await netboot.serve(cluster, OutputLayout(out), images, bind, port_, opts, stop)

    asyncio.run(main())


@netboot_app.command("dnsmasq-config")
def netboot_dnsmasq_config(
    spec: SpecOpt = DEFAULT_SPEC,
    interface: IfaceOpt = None,
    dhcp: DhcpOpt = None,
    enable_ra: Annotated[bool, typer.Option(help="IPv6 router advertisements")] = False,
) -> None:
    """Print the dnsmasq config (check it with `dnsmasq --test -C FILE`)."""
    from plasmacloud.provision.dnsmasq import DnsmasqOptions, dnsmasq_conf

    opts = DnsmasqOptions(interface=interface, mode=dhcp, enable_ra=enable_ra)
    typer.echo(dnsmasq_conf(_spec(spec), opts), nl=False)


@provision_app.command("status")
def provision_status(
    out: OutOpt = DEFAULT_OUT,
    server: Annotated[
        str | None, typer.Option(help="ask a running netboot server (http://host:port)")
    ] = None,
    watch: Annotated[
        bool, typer.Option(help="refresh until every node is joined or failed")
    ] = False,
    interval: Annotated[float, typer.Option(help="--watch refresh seconds")] = 2.0,
    timeout: Annotated[float, typer.Option(help="--watch gives up after this many seconds")] = 3600,
    as_json: JsonOpt = False,
) -> None:
    """Show each node's provisioning state (from the server or the saved state file)."""
    from plasmacloud.provision import status_view
    from plasmacloud.provision.layout import OutputLayout

    def show(data: StateFile, more: bool) -> None:
        typer.echo(data.model_dump_json(indent=2) if as_json else status_view.table(data))
        if more:
            typer.echo("")

    status_view.follow(OutputLayout(out), server, show, watch, interval, timeout)


def agent_cmd(
    server: Annotated[
        str | None, typer.Option(help="netboot server URL (default: plasmacloud.server=)")
    ] = None,
    mac: Annotated[
        str | None, typer.Option(help="this machine's MAC (default: plasmacloud.mac=)")
    ] = None,
    root: Annotated[
        Path | None,
        typer.Option(help="install into this root (netboot installer: /mnt, else /)"),
    ] = None,
    disks: Annotated[bool, typer.Option(help="partition and format the disk")] = True,
    mount: Annotated[
        bool | None,
        typer.Option(help="mount the new filesystems under --root (netboot installer: yes)"),
    ] = None,
    wipe: Annotated[
        bool, typer.Option(help="allow destroying a disk that holds something else")
    ] = False,
    start: Annotated[bool, typer.Option(help="enable and start the services")] = False,
    join_timeout: Annotated[
        float | None, typer.Option(help="wait this long for the services, then report joined")
    ] = None,
) -> None:
    """First-boot agent: fetch this node's bundle, prepare disks, install files, report."""
    from plasmacloud.provision import agent

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cmdline = Path("/proc/cmdline")
    try:
        opts = agent.options_from_cmdline(
            cmdline.read_text() if cmdline.exists() else "",
            server=server,
            mac=mac,
            root=root,
            mount=mount,
            disks=disks,
            wipe=wipe,
            start=start,
            join_timeout=join_timeout,
        )
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(EXIT_USAGE) from exc
    try:
        results = agent.Agent(opts).run()
    except agent.AgentError as exc:
        typer.echo(f"agent failed: {exc}", err=True)
        raise typer.Exit(EXIT_FAILURE) from exc
    for r in results:
        typer.echo(f"{r.name}: {'; '.join(r.changes) or 'already right'}")


def deploy_cmd(
    spec: SpecOpt = DEFAULT_SPEC,
    out: OutOpt = DEFAULT_OUT,
    method: Annotated[
        str | None, typer.Option(help="nixos-anywhere | image | ssh (default: the spec's)")
    ] = None,
    node: NodesOpt = None,
    dry_run: Annotated[bool, typer.Option(help="stage secrets and print the commands")] = False,
    package: Annotated[
        Path | None, typer.Option(help="plasmacloud wheel/sdist (ssh method)")
    ] = None,
    skip_preflight: Annotated[bool, typer.Option(help="do not check the targets first")] = False,
    identity: Annotated[str | None, typer.Option("-i", help="SSH private key")] = None,
) -> None:
    """Deploy nodes with a driver; checks each target first, never on a red preflight."""
    from plasmacloud.provision import deploy
    from plasmacloud.provision.findings import has_errors
    from plasmacloud.provision.layout import OutputLayout
    from plasmacloud.provision.target import ShellFacts

    cluster = _spec(spec)
    layout = OutputLayout(out)
    try:
        drv = deploy.driver(method or cluster.deploy.method, package)
    except deploy.DeployError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(EXIT_USAGE) from exc
    nodes = [n for n in cluster.nodes if not node or n.node_id in node]
    if not nodes:
        typer.echo(f"no such node(s): {', '.join(node or [])}", err=True)
        raise typer.Exit(EXIT_USAGE)
    if drv.name == "image":
        typer.echo(f"plasma netboot serve --spec {spec} --out {out} --images IMAGES")
        typer.echo("then PXE-boot: " + ", ".join(f"{n.node_id} ({n.mac})" for n in nodes))
    if not dry_run and drv.name == "nixos-anywhere" and shutil.which("nixos-anywhere") is None:
        typer.echo(
            "nixos-anywhere is not installed (nix profile install "
            "github:nix-community/nixos-anywhere); --dry-run prints the commands",
            err=True,
        )
        raise typer.Exit(EXIT_UNAVAILABLE)
    if not (dry_run or skip_preflight):
        findings = deploy.target_findings(drv, cluster, nodes, ShellFacts(identity=identity))
        if has_errors(findings):
            print_findings(findings, False, f"preflight for {drv.name}")
    run = deploy.print_only if dry_run else deploy.stream_command
    for n in nodes:
        try:
            lines = deploy.deploy_node(drv, cluster, layout, n, run)
        except deploy.DeployError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(EXIT_FAILURE) from exc
        for line in lines:
            typer.echo(line)


def _membership_report(change: NodeChange, node: str, out: Path, verb: str, next_step: str) -> None:
    from plasmacloud.provision.layout import OutputLayout

    typer.echo(f"{verb} {node} in the spec (bootstrap: false); certificate {change.certificate}")
    if not change.comments_kept:
        typer.echo("note: cluster.yaml was rewritten; its comments are not kept", err=True)
    changed = [w for w in change.rendered if w.status != "unchanged"]
    typer.echo(f"rendered {len(changed)} changed file(s) into {out}")
    for f in change.findings:
        typer.echo(f"{f.severity.value.upper()} {f.id}: {f.message} (fix: {f.fix})", err=True)
    config = OutputLayout(out).config_path(node)
    typer.echo(f"next: {next_step}\n  plasma cluster add-node {node} --config {config}")


@provision_app.command("add-node")
def add_node_cmd(
    node: Annotated[str, typer.Argument(help="the new node's id, e.g. node04")],
    mac: Annotated[str, typer.Option(help="its MAC address (PXE boot)")],
    ip: Annotated[str, typer.Option(help="its IPv4 address")],
    spec: SpecOpt = DEFAULT_SPEC,
    out: OutOpt = DEFAULT_OUT,
) -> None:
    """Add a control-plane node to cluster.yaml (bootstrap: false, it joins), issue its
    certificate and render every node's files again; warns when the voters become even."""
    from ipaddress import IPv4Address

    from plasmacloud.provision.members import add_node
    from plasmacloud.provision.pki import PKIError
    from plasmacloud.provision.spec import SpecError

    try:
        change = add_node(spec, out, node, mac, IPv4Address(ip))
    except (SpecError, PKIError, ValueError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(EXIT_USAGE) from exc
    _membership_report(
        change, node, out, "added", "deploy the machine (`plasma deploy`, netboot), then"
    )


@provision_app.command("replace-node")
def replace_node_cmd(
    node: Annotated[str, typer.Argument(help="the node whose machine is replaced")],
    mac: Annotated[str | None, typer.Option(help="the new machine's MAC")] = None,
    ip: Annotated[str | None, typer.Option(help="the new machine's IPv4 address")] = None,
    spec: SpecOpt = DEFAULT_SPEC,
    out: OutOpt = DEFAULT_OUT,
) -> None:
    """The same node name on a new machine: new MAC/IP, bootstrap false, a new key and
    certificate, every node's files rendered again."""
    from ipaddress import IPv4Address

    from plasmacloud.provision.members import replace_node
    from plasmacloud.provision.pki import PKIError
    from plasmacloud.provision.spec import SpecError

    try:
        change = replace_node(spec, out, node, mac, IPv4Address(ip) if ip else None)
    except (SpecError, PKIError, ValueError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(EXIT_USAGE) from exc
    _membership_report(
        change,
        node,
        out,
        "replaced",
        f"`plasma cluster remove-node {node} --config <a member's config>`, deploy the "
        "new machine, then",
    )


def register(app: typer.Typer) -> None:
    """Attach the provisioning commands to the top-level ``plasma`` app."""
    app.command("init")(init)
    app.command("render")(render_cmd)
    app.add_typer(pki_app, name="pki")
    app.command("preflight")(preflight_cmd)
    app.add_typer(netboot_app, name="netboot")
    app.add_typer(provision_app, name="provision")
    app.command("agent")(agent_cmd)
    app.command("deploy")(deploy_cmd)
