"""Text files the toolchain writes (shell scripts, Nix, iPXE, configs) are package data
under ``provision/templates/``, rendered with Jinja2.

StrictUndefined: a variable the caller did not pass is an error, never an empty string
in a script. No autoescaping (nothing here is HTML); the template's last newline is
kept and a line holding only a ``{% ... %}`` tag leaves nothing behind, so the text
between tags is rendered byte for byte as the file has it.
"""

from __future__ import annotations

import functools
from importlib.resources import files
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2

PACKAGE = "plasmacloud.provision"
DIRECTORY = "templates"


@functools.cache
def _environment() -> jinja2.Environment:
    # imported here: the netboot image's agent imports modules that render on the host
    # only, and its image carries no Jinja2 until the installed metadata names it
    import jinja2

    return jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


@functools.cache
def template(name: str) -> jinja2.Template:
    """The template ``templates/<name>`` from the installed package."""
    text = (files(PACKAGE) / DIRECTORY / name).read_text(encoding="utf-8")
    return _environment().from_string(text)


def render_template(name: str, **values: Any) -> str:
    """``templates/<name>`` rendered with ``values`` (jinja2.UndefinedError if one it
    uses is missing)."""
    return template(name).render(**values)
