"""`plasma validate --spec cluster.yaml`: the cluster checklist against real machines."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from plasmacloud.cli._common import JsonOpt, console
from plasmacloud.cluster.services import SERVICES, Service, service_named
from plasmacloud.common.errors import EXIT_USAGE

if TYPE_CHECKING:
    from plasmacloud.cluster.target import ClusterTarget
    from plasmacloud.common.config import TLSConfig
    from plasmacloud.lab.ssh import SSHOptions
    from plasmacloud.validate.results import CheckResult

ADMIN_ENV = "PLASMA_ADMIN_CREDENTIALS"
DEFAULT_SERVICES = ",".join(svc.name for svc in SERVICES)

JunitOpt = Annotated[
    Path | None, typer.Option("--junit", help="also write the checklist as JUnit XML here")
]
CaOpt = Annotated[Path | None, typer.Option(help="CA file (default: <out>/pki/ca.crt)")]
CertOpt = Annotated[
    Path | None, typer.Option(help="client cert (default: <out>/pki/clients/admin.crt)")
]
KeyOpt = Annotated[
    Path | None, typer.Option(help="client key (default: <out>/pki/clients/admin.key)")
]
KnownHostsOpt = Annotated[
    Path | None,
    typer.Option(
        "--known-hosts",
        help="host keys to check strictly (default: learn new ones into "
        "<out>/known_hosts, refuse changed ones)",
        show_default=False,
    ),
]
SpecOpt = Annotated[Path, typer.Option("--spec", "-s", help="the cluster spec")]
OutOpt = Annotated[
    Path, typer.Option("--out", "-o", help="output directory of `plasma render`/`pki`")
]
ServicesOpt = Annotated[str, typer.Option(help="services the nodes run, comma-separated")]


def parse_services(text: str) -> tuple[Service, ...]:
    """``chainfire,flaredb`` -> the services' specs (KeyError naming an unknown one)."""
    return tuple(service_named(n.strip()) for n in text.split(",") if n.strip())


def spec_tls(out: Path, cacert: Path | None, cert: Path | None, key: Path | None) -> TLSConfig:
    """The operator's CA and client certificate (``operator_tls``), all of them present:
    FileNotFoundError naming the missing ones and how to make them otherwise."""
    from plasmacloud.validate.spec_target import operator_tls

    tls = operator_tls(out, cacert, cert, key)
    missing = [str(f) for f in (tls.ca_file, tls.cert_file, tls.key_file) if not f.is_file()]
    if missing:
        raise FileNotFoundError(
            f"missing {', '.join(missing)} (`plasma pki init`, or --cacert/--cert/--key)"
        )
    return tls


def ssh_options(out: Path, known_hosts: Path | None, identity: Path | None) -> SSHOptions:
    """Strict host keys from ``known_hosts``, else learn new ones into <out>/known_hosts."""
    from plasmacloud.lab.ssh import SSHOptions

    return SSHOptions(
        known_hosts=known_hosts or out / "known_hosts",
        identity=identity,
        accept_new=known_hosts is None,
    )


IdentityOpt = Annotated[Path | None, typer.Option("--ssh-identity", help="SSH private key")]


def ssh_spec_target(
    spec: Path,
    out: Path,
    services: str,
    tls_files: tuple[Path | None, Path | None, Path | None],
    identity: Path | None,
    known_hosts: Path | None,
) -> ClusterTarget:
    """The real machines of ``spec`` as a target: dialled at the spec's addresses as the
    operator (``tls_files``: CA, certificate and key, defaults under ``out``), their
    plasmacloud-* units controlled over SSH. SpecError, KeyError (an unknown service) or
    FileNotFoundError (TLS files) name what is wrong."""
    from plasmacloud.lab.ssh import SSHBackend
    from plasmacloud.lab.ssh_target import ssh_target
    from plasmacloud.provision.spec import load_spec
    from plasmacloud.validate.spec_target import spec_configs

    cluster = load_spec(spec)
    chosen = parse_services(services)
    tls = spec_tls(out, *tls_files)
    options = ssh_options(out, known_hosts, identity)
    backend = SSHBackend.from_spec(cluster, options, services=tuple(s.name for s in chosen))
    return ssh_target(backend, spec_configs(cluster), chosen, tls)


def emit(
    results: list[CheckResult],
    as_json: bool,
    junit: Path | None,
    root: Path,
    envelope: dict[str, object] | None = None,
) -> int:
    """Print the report (table or JSON), write JUnit if asked, save it under ``root``
    (a lab's directory or the render tree: the dashboard lists it); the exit code. JSON
    inside ``envelope`` (as its "validation") when the command says more than the report."""
    from plasmacloud.validate.report import (
        exit_code,
        report_json,
        report_junit,
        report_table,
        save_report,
    )

    if junit is not None:
        junit.write_text(report_junit(results))
    saved = save_report(results, root)
    if as_json:
        report = report_json(results)
        doc = report if envelope is None else {**envelope, "validation": report}
        typer.echo(json.dumps(doc, indent=2))
    else:
        console.print(report_table(results))
        console.print(f"report saved: {saved}")
    return exit_code(results)


def validate(
    spec: SpecOpt = Path("cluster.yaml"),
    out: OutOpt = Path("out"),
    cacert: CaOpt = None,
    cert: CertOpt = None,
    key: KeyOpt = None,
    admin_credentials: Annotated[
        Path | None,
        typer.Option(help=f"IAM bootstrap admin file (default: ${ADMIN_ENV})", show_default=False),
    ] = None,
    services: ServicesOpt = DEFAULT_SERVICES,
    as_json: JsonOpt = False,
    junit: JunitOpt = None,
    persistence: Annotated[
        bool,
        typer.Option(
            "--persistence",
            help="also write markers, restart every node's services over SSH "
            "(systemctl stop/start plasmacloud-*) and check they are back",
        ),
    ] = False,
    identity: Annotated[
        Path | None, typer.Option("--ssh-identity", help="SSH private key (--persistence)")
    ] = None,
    known_hosts: KnownHostsOpt = None,
) -> None:
    """Run the cluster checklist against the spec's control-plane nodes, at the spec's
    addresses, with the render tree's CA and admin client certificate (non-zero on failure)."""
    import asyncio

    from plasmacloud.iam.credentials import AdminCredentials, CredentialsError
    from plasmacloud.lab.ssh import SSHBackend
    from plasmacloud.lab.ssh_target import ssh_restart
    from plasmacloud.provision.spec import SpecError, load_spec
    from plasmacloud.validate.checks import run_checks
    from plasmacloud.validate.spec_target import spec_configs, spec_target

    try:
        cluster = load_spec(spec)
        chosen = parse_services(services)
        creds_path = admin_credentials or (Path(p) if (p := os.environ.get(ADMIN_ENV)) else None)
        admin = AdminCredentials.read(creds_path) if creds_path else None
        tls = spec_tls(out, cacert, cert, key)
    except (SpecError, KeyError, CredentialsError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from exc
    restart = None
    if persistence:
        ssh = ssh_options(out, known_hosts, identity)
        backend = SSHBackend.from_spec(cluster, ssh, services=tuple(s.name for s in chosen))
        restart = ssh_restart(backend, spec_configs(cluster), chosen, tls)
    target = spec_target(cluster, tls, chosen, admin, restart)
    results = asyncio.run(run_checks(target, persistence=persistence))
    raise typer.Exit(emit(results, as_json, junit, out))
