"""Options that were removed, kept only to say what replaces them (instead of typer's
bare "no such option") when an old script or VM image still passes them."""

from __future__ import annotations

from typing import Annotated

import typer

TRUSTED_CN_REMOVED = (
    "--trusted-cn was removed: no certificate skips IAM any more. A client certificate's "
    "CN now names an IAM user or service account, whose policies decide its calls "
    "(create one named after the CN, e.g. `plasma iam user create CN --certificate-only "
    "--group admins`); the cluster's node ids are narrow system principals."
)


def refuse_trusted_cn(value: list[str] | None) -> None:
    """Typer callback: any use of ``--trusted-cn`` is a usage error naming the replacement."""
    if value:
        raise typer.BadParameter(TRUSTED_CN_REMOVED)


TrustedCnOpt = Annotated[
    list[str] | None,
    typer.Option("--trusted-cn", hidden=True, callback=refuse_trusted_cn, help=TRUSTED_CN_REMOVED),
]
