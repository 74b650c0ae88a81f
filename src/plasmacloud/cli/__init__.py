"""The ``plasma`` command: thin wrappers that parse arguments and call the packages.

Each command group lives in its own module here so the tree shows what the CLI offers;
nothing outside this package imports it. The modules import their subsystems inside the
commands that use them, so ``plasma --help`` loads none of them (tests/cli checks that).
"""

from __future__ import annotations

import typer

from plasmacloud import __version__
from plasmacloud.cli import (
    chainfire,
    cluster,
    dashboard,
    flaredb,
    iam,
    lab,
    lab_chaos,
    provision,
    validate,
)

app = typer.Typer(
    name="plasma",
    help="PlasmaCloud: provision, run and validate a small private-cloud control plane.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    # Typer coerces an option's value through pydantic (a 0.1 s import) unless it is
    # already a bool; its own --help/--install-completion/--show-completion flags
    # default to None, so `plasma GROUP --help` would pay that import for them alone.
    context_settings={
        "default_map": {"help": False, "install_completion": False, "show_completion": False}
    },
)


@app.command()
def version() -> None:
    """Print the PlasmaCloud version."""
    typer.echo(__version__)


app.add_typer(chainfire.app, name="chainfire")
app.add_typer(cluster.app, name="cluster")
app.add_typer(flaredb.app, name="flaredb")
app.add_typer(iam.app, name="iam")
app.add_typer(lab.app, name="lab")
provision.register(app)
app.command("validate")(validate.validate)
app.command("chaos")(lab_chaos.chaos_spec)
app.command("dashboard")(dashboard.dashboard)
# `plasma sql` is the everyday FlareDB shell, so it also sits at the top level.
app.command("sql", help="FlareDB SQL shell or one statement (-c); same as `plasma flaredb sql`.")(
    flaredb.sql
)
