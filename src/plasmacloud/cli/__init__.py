"""The ``plasma`` command: thin wrappers that parse arguments and call the packages.

Each command group lives in its own module here so the tree shows what the CLI offers;
nothing outside this package imports it.
"""

from __future__ import annotations

import typer

from plasmacloud import __version__
from plasmacloud.cli import chainfire, cluster, flaredb, iam, lab, provision, validate
from plasmacloud.cli import lab_chaos as lab_chaos  # registers extra `lab` commands

app = typer.Typer(
    name="plasma",
    help="PlasmaCloud: provision, run and validate a small private-cloud control plane.",
    no_args_is_help=True,
    rich_markup_mode="rich",
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
# `plasma sql` is the everyday FlareDB shell, so it also sits at the top level.
app.command("sql", help="FlareDB SQL shell or one statement (-c); same as `plasma flaredb sql`.")(
    flaredb.sql
)
