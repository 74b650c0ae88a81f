"""`plasma iam ...` commands: serve, bootstrap, and a thin client of the IAM REST API.

Client commands find IAM through ``--url`` / ``$IAM_URLS`` / ``$IAM_URL`` and log in with
the bootstrap admin's credentials file (``--credentials`` / ``$PLASMA_ADMIN_CREDENTIALS``).
Secrets are read from stdin or a prompt, never from the command line (``ps`` shows that).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from plasmacloud.cli._common import JsonOpt
from plasmacloud.common.errors import EXIT_FAILURE, EXIT_UNAVAILABLE, EXIT_USAGE

if TYPE_CHECKING:
    from plasmacloud.common.config import NodeConfig
    from plasmacloud.iam.client import IamClient

app = typer.Typer(help="IAM: users, policies, tokens.", no_args_is_help=True)
user_app = typer.Typer(help="Users.", no_args_is_help=True)
group_app = typer.Typer(help="Groups.", no_args_is_help=True)
policy_app = typer.Typer(help="Policies (AWS IAM JSON documents).", no_args_is_help=True)
sa_app = typer.Typer(help="Service accounts (OAuth2 clients).", no_args_is_help=True)
role_app = typer.Typer(help="Roles.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(group_app, name="group")
app.add_typer(policy_app, name="policy")
app.add_typer(sa_app, name="sa")
app.add_typer(role_app, name="role")
out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="the node's cluster-config.json")]


@dataclass
class _Target:
    urls: list[str]
    credentials: Path | None
    cacert: Path | None


@app.callback()
def _common(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            envvar=["IAM_URLS", "IAM_URL"],
            help="IAM URL(s), comma-separated (default $IAM_URLS or $IAM_URL)",
        ),
    ] = None,
    credentials: Annotated[
        Path | None,
        typer.Option(
            "--credentials",
            envvar="PLASMA_ADMIN_CREDENTIALS",
            help="admin credentials JSON (default $PLASMA_ADMIN_CREDENTIALS)",
        ),
    ] = None,
    cacert: Annotated[
        Path | None,
        typer.Option(
            "--cacert",
            envvar=["IAM_CACERT", "ETCDCTL_CACERT"],
            help="CA certificate for https IAM URLs",
        ),
    ] = None,
) -> None:
    """Options shared by the client commands."""
    urls = [u.strip() for u in (url or "").split(",") if u.strip()]
    ctx.obj = _Target(urls, credentials, cacert)


def _need_credentials(ctx: typer.Context) -> Path:
    from plasmacloud.iam.credentials import CredentialsError

    target: _Target = ctx.obj
    if target.credentials is None:
        raise CredentialsError("no credentials: pass --credentials or set PLASMA_ADMIN_CREDENTIALS")
    return target.credentials


def _run(
    ctx: typer.Context, work: Callable[[IamClient], Awaitable[Any]], login: bool = True
) -> Any:
    """Run ``work`` with a logged-in client; map failures to exit codes and clean messages."""
    import asyncio

    from plasmacloud.iam.client import IamApiError, IamClient
    from plasmacloud.iam.credentials import AdminCredentials, CredentialsError

    target: _Target = ctx.obj

    async def main() -> Any:
        async with IamClient(target.urls, target.cacert) as client:
            if login:
                await client.login_admin(AdminCredentials.read(_need_credentials(ctx)))
            return await work(client)

    try:
        return asyncio.run(main())
    except (CredentialsError, ValueError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    except IamApiError as exc:
        err.print(f"[red]error:[/red] {exc}")
        if isinstance(exc.body, dict):
            for e in exc.body.get("errors", []):
                err.print(f"  {e.get('field')}: {e.get('message')}")
        raise typer.Exit(EXIT_FAILURE) from None
    except ConnectionError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_UNAVAILABLE) from None


def _print(data: Any) -> None:
    out.print_json(json.dumps(data))


def _table(items: list[dict[str, Any]], columns: list[str], as_json: bool) -> None:
    if as_json:
        _print(items)
        return
    table = Table(*columns)
    for item in items:
        table.add_row(
            *(
                ", ".join(map(str, v)) if isinstance(v, list) else str(v)
                for v in (item.get(c, "") for c in columns)
            )
        )
    out.print(table)


def _read_secret(what: str) -> str:
    """From stdin when piped, else an interactive prompt (asked twice)."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    return str(typer.prompt(what, hide_input=True, confirmation_prompt=True))


def _load_config(path: Path) -> NodeConfig:
    from plasmacloud.common.config import ConfigError, NodeConfig

    try:
        return NodeConfig.load(path)
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_USAGE) from exc


# -- serving ----------------------------------------------------------------------------

STORE_NAMES = ("chainfire", "etcd", "memory")
StoreOpt = Annotated[
    str,
    typer.Option(
        help="chainfire: Chainfire's system keyspace (production; no etcd client can reach "
        "it); etcd: the public etcd v3 API (IAM on a real etcd); memory: one node, dev"
    ),
]


def _check_store(store: str) -> None:
    if store not in STORE_NAMES:
        err.print(f"[red]error:[/red] --store must be one of {', '.join(STORE_NAMES)}")
        raise typer.Exit(EXIT_USAGE)


@app.command()
def serve(
    config: ConfigOpt,
    store: StoreOpt = "chainfire",
    bootstrap_out: Annotated[
        Path | None,
        typer.Option(help="create the first admin if none exists; write credentials here"),
    ] = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR")] = "INFO",
) -> None:
    """Run this node's IAM server in the foreground (SIGTERM stops it)."""
    import asyncio

    from plasmacloud.common.serve_errors import serve_exit_codes
    from plasmacloud.iam.server import serve as run
    from plasmacloud.iam.stores import open_store

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    _check_store(store)
    node = _load_config(config)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(node, stop, open_store(node, store), bootstrap_out)

    with serve_exit_codes("IAM"):
        asyncio.run(main())


@app.command()
def bootstrap(
    config: ConfigOpt,
    out_path: Annotated[
        Path, typer.Option("--out", help="where to write the admin credentials (0600)")
    ],
    username: Annotated[
        str,
        typer.Option(help="the admin's user name (a client certificate with this CN is it too)"),
    ] = "admin",
    certificate_admin: Annotated[
        list[str] | None,
        typer.Option(
            help="also make a client certificate with this CN an admin (a password-less "
            "admin user of that name; repeatable, ensured on every run)"
        ),
    ] = None,
    store: StoreOpt = "chainfire",
) -> None:
    """Create the first admin in the cluster's store, once (re-running changes nothing)."""
    import asyncio

    from plasmacloud.iam.bootstrap import Outcome, bootstrap_cluster
    from plasmacloud.iam.stores import open_store

    _check_store(store)
    node = _load_config(config)

    async def run() -> Outcome:
        return await bootstrap_cluster(
            node, out_path, username, certificate_admin or (), open_store(node, store)
        )

    try:
        outcome = asyncio.run(run())
    except Exception as exc:  # gRPC errors carry no common base worth naming here
        err.print(f"[red]error:[/red] Chainfire not reachable or refused: {exc}")
        raise typer.Exit(EXIT_UNAVAILABLE) from None
    if outcome == Outcome.CREATED:
        out.print(f"admin created; credentials written to {out_path} (mode 0600)")
    elif outcome == Outcome.EXISTING:
        out.print(f"already bootstrapped; credentials are in {out_path}")
    else:
        err.print(
            "[red]error:[/red] this cluster was bootstrapped before and "
            f"{out_path} does not exist; use the credentials file written then"
        )
        raise typer.Exit(EXIT_FAILURE)


# -- tokens ------------------------------------------------------------------------------


@app.command()
def token(
    ctx: typer.Context,
    username: Annotated[
        str | None, typer.Option(help="log in as this user (password from stdin or a prompt)")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Print an access token (the admin's by default): `export TOKEN=$(plasma iam token)`."""
    from plasmacloud.iam.credentials import AdminCredentials

    async def work(c: IamClient) -> dict[str, Any]:
        if username is None:
            return await c.login_admin(AdminCredentials.read(_need_credentials(ctx)))
        password = _read_secret("password")
        return await c.login({"grant_type": "password", "username": username, "password": password})

    body = _run(ctx, work, login=False)
    if as_json:
        _print(body)
    else:
        typer.echo(body["access_token"])


@app.command()
def verify(
    ctx: typer.Context,
    access_token: Annotated[str, typer.Argument(help="the token ('-' reads it from stdin)")],
) -> None:
    """Verify a token the way Chainfire and FlareDB do (JWKS, expiry, revocation)."""
    import asyncio
    import ssl

    from plasmacloud.iam.authz import TokenError, Verifier

    target: _Target = ctx.obj
    raw = sys.stdin.readline().strip() if access_token == "-" else access_token

    async def main() -> dict[str, Any]:
        ssl_ctx = ssl.create_default_context(cafile=str(target.cacert)) if target.cacert else None
        v = Verifier(target.urls, ssl_context=ssl_ctx)
        try:
            p = await v.authenticate(raw)
        finally:
            await v.close()
        return {"valid": True, "sub": p.sub, "username": p.username, "groups": list(p.groups),
                "roles": list(p.roles), "jti": p.jti, "expires_at": p.expires_at}  # fmt: skip

    try:
        _print(asyncio.run(main()))
    except TokenError as exc:
        _print({"valid": False, "reason": exc.reason, "detail": str(exc)})
        raise typer.Exit(EXIT_FAILURE) from None
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_USAGE) from None


@app.command()
def whoami(ctx: typer.Context) -> None:
    """Show the identity the credentials log in as."""
    _print(_run(ctx, lambda c: c.call("GET", "/v1/self")))


@app.command()
def simulate(
    ctx: typer.Context,
    action: Annotated[str, typer.Option(help="e.g. chainfire:Put")],
    resource: Annotated[str, typer.Option(help="e.g. key/app/x")],
    principal: Annotated[
        str | None, typer.Option(help="user:<name> or sa:<client_id> (default: yourself)")
    ] = None,
    policy_file: Annotated[
        list[Path] | None, typer.Option(help="evaluate these documents instead")
    ] = None,
    context: Annotated[
        list[str] | None, typer.Option(help="condition key=value, e.g. plasma:SourceIp=10.0.0.1")
    ] = None,
) -> None:
    """Would this request be allowed? Exit code 0 = Allow, 1 = Deny."""
    body: dict[str, Any] = {"action": action, "resource": resource}
    if principal:
        body["principal"] = principal
    if policy_file:
        body["policies"] = [json.loads(p.read_text()) for p in policy_file]
    ctx_pairs = [c.partition("=") for c in context or []]
    body["context"] = {k: v for k, _, v in ctx_pairs}
    result = _run(ctx, lambda c: c.call("POST", "/v1/policy/simulate", json=body))
    _print(result)
    raise typer.Exit(0 if result["decision"] == "Allow" else EXIT_FAILURE)


@app.command()
def audit(
    ctx: typer.Context,
    sub: Annotated[str | None, typer.Option(help="only this principal")] = None,
    action: Annotated[str | None, typer.Option(help="only this action")] = None,
    decision: Annotated[str | None, typer.Option(help="only Allow or only Deny")] = None,
    source: Annotated[
        str | None, typer.Option(help="only this service (chainfire) or node's (chainfire@node02)")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Authorization decisions (IAM's, Chainfire's, FlareDB's), oldest first."""
    filters = {"sub": sub, "action": action, "decision": decision, "source": source}
    params = {"limit": str(limit), **{k: v for k, v in filters.items() if v}}
    page = _run(ctx, lambda c: c.call("GET", "/v1/audit", params=params))
    _table(page["items"], ["sub", "action", "resource", "decision", "reason", "source"], as_json)


@app.command("rotate-key")
def rotate_key(ctx: typer.Context) -> None:
    """Start signing with a new key (the old one stays in the JWKS until its tokens expire)."""
    _print(_run(ctx, lambda c: c.call("POST", "/v1/keys/rotate")))


# -- entities ----------------------------------------------------------------------------


@user_app.command("list")
def user_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List users."""
    items = _run(ctx, lambda c: c.list_all("/v1/users"))
    _table(items, ["name", "groups", "roles", "policies", "disabled"], as_json)


@user_app.command("create")
def user_create(
    ctx: typer.Context,
    name: str,
    group: Annotated[list[str] | None, typer.Option(help="add to this group")] = None,
    policy: Annotated[list[str] | None, typer.Option(help="attach this policy")] = None,
    certificate_only: Annotated[
        bool,
        typer.Option(
            "--certificate-only",
            help="no password: the user signs in only with a client certificate whose CN "
            "is NAME (etcdctl --cert/--key, curl --cert)",
        ),
    ] = False,
) -> None:
    """Create a user (password from stdin or a prompt, unless --certificate-only)."""
    body: dict[str, object] = {"name": name, "groups": group or [], "policies": policy or []}
    if not certificate_only:
        body["password"] = _read_secret(f"password for {name}")
    _print(_run(ctx, lambda c: c.call("POST", "/v1/users", json=body)))


@user_app.command("set-password")
def user_set_password(ctx: typer.Context, name: str) -> None:
    """Reset a user's password as an admin (new password from stdin or a prompt)."""
    body = {"password": _read_secret(f"new password for {name}")}
    _run(ctx, lambda c: c.call("PATCH", f"/v1/users/{name}", json=body))
    typer.echo(f"password of {name} changed")


@user_app.command("delete")
def user_delete(ctx: typer.Context, name: str) -> None:
    """Delete a user."""
    _run(ctx, lambda c: c.call("DELETE", f"/v1/users/{name}"))


@group_app.command("list")
def group_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List groups."""
    _table(_run(ctx, lambda c: c.list_all("/v1/groups")), ["name", "policies"], as_json)


@group_app.command("create")
def group_create(
    ctx: typer.Context,
    name: str,
    policy: Annotated[list[str] | None, typer.Option(help="attach this policy")] = None,
) -> None:
    """Create a group."""
    body = {"name": name, "policies": policy or []}
    _print(_run(ctx, lambda c: c.call("POST", "/v1/groups", json=body)))


@group_app.command("add-user")
def group_add_user(ctx: typer.Context, group: str, user: str) -> None:
    """Put a user in a group."""
    _print(_run(ctx, lambda c: c.call("PUT", f"/v1/groups/{group}/members/{user}")))


@role_app.command("list")
def role_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List roles."""
    _table(_run(ctx, lambda c: c.list_all("/v1/roles")), ["name", "policies"], as_json)


@role_app.command("create")
def role_create(
    ctx: typer.Context,
    name: str,
    policy: Annotated[list[str] | None, typer.Option(help="attach this policy")] = None,
) -> None:
    """Create a role."""
    body = {"name": name, "policies": policy or []}
    _print(_run(ctx, lambda c: c.call("POST", "/v1/roles", json=body)))


@role_app.command("assign")
def role_assign(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help="users or service-accounts")],
    name: str,
    role: str,
) -> None:
    """Give a user or service account a role."""
    _print(_run(ctx, lambda c: c.call("PUT", f"/v1/{kind}/{name}/roles/{role}")))


@policy_app.command("list")
def policy_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List policies."""
    _table(_run(ctx, lambda c: c.list_all("/v1/policies")), ["name", "description"], as_json)


@policy_app.command("show")
def policy_show(ctx: typer.Context, name: str) -> None:
    """Print a policy document."""
    _print(_run(ctx, lambda c: c.call("GET", f"/v1/policies/{name}")))


@policy_app.command("create")
def policy_create(
    ctx: typer.Context,
    name: str,
    document: Annotated[Path, typer.Argument(help="policy JSON file")],
    description: str = "",
) -> None:
    """Create a policy from a JSON file (errors name the bad field)."""
    try:
        doc = json.loads(document.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        err.print(f"[red]error:[/red] {document}: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    body = {"name": name, "document": doc, "description": description}
    _print(_run(ctx, lambda c: c.call("POST", "/v1/policies", json=body)))


@policy_app.command("check")
def policy_check(document: Annotated[Path, typer.Argument(help="policy JSON file")]) -> None:
    """Validate a policy file locally (no server needed); errors name the bad field."""
    from plasmacloud.iam.policy import PolicyError, parse_policy

    try:
        policy = parse_policy(json.loads(document.read_text()))
    except (OSError, json.JSONDecodeError) as exc:
        err.print(f"[red]error:[/red] {document}: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    except PolicyError as exc:
        for field, message in exc.errors:  # plain lines: one per problem, never wrapped
            typer.echo(f"{document}: {field}: {message}", err=True)
        raise typer.Exit(EXIT_FAILURE) from None
    typer.echo(f"{document}: valid ({len(policy.statements)} statements)")


@policy_app.command("delete")
def policy_delete(ctx: typer.Context, name: str) -> None:
    """Delete a policy (refused while attached)."""
    _run(ctx, lambda c: c.call("DELETE", f"/v1/policies/{name}"))


@policy_app.command("attach")
def policy_attach(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help="users, groups, roles or service-accounts")],
    name: str,
    policy: str,
) -> None:
    """Attach a policy to a user, group, role or service account."""
    _print(_run(ctx, lambda c: c.call("PUT", f"/v1/{kind}/{name}/policies/{policy}")))


@sa_app.command("create")
def sa_create(
    ctx: typer.Context,
    name: str,
    policy: Annotated[list[str] | None, typer.Option(help="attach this policy")] = None,
) -> None:
    """Create a service account; prints its client_id and client_secret (shown once)."""
    body = {"name": name, "policies": policy or []}
    _print(_run(ctx, lambda c: c.call("POST", "/v1/service-accounts", json=body)))


@sa_app.command("reset-secret")
def sa_reset_secret(ctx: typer.Context, name: str) -> None:
    """Issue a new client secret (the old one stops working); printed once."""
    _print(_run(ctx, lambda c: c.call("POST", f"/v1/service-accounts/{name}/secret")))


@sa_app.command("list")
def sa_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List service accounts."""
    items = _run(ctx, lambda c: c.list_all("/v1/service-accounts"))
    _table(items, ["name", "groups", "roles", "policies", "disabled"], as_json)
