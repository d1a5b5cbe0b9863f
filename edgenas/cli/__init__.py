"""The ``edgenas`` command: thin Typer wrappers over the Python API.

Each command group lives in its own module (``edgenas/cli/<group>.py``) that defines a ``typer.Typer``
and is registered here. Every user error is an :class:`~edgenas.errors.EdgenasError`; ``main`` prints
its one-line message on stderr and exits with code 2.
"""

from __future__ import annotations

import sys

import typer

from edgenas.errors import EdgenasError

app = typer.Typer(
    name="edgenas",
    help="Hardware-aware neural architecture search for edge AI.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Hardware-aware neural architecture search for edge AI."""


@app.command("spaces")
def spaces_command() -> None:
    """List the search spaces with their sizes."""
    from rich.console import Console
    from rich.table import Table

    from edgenas.spaces import SPACES, get_space

    table = Table("space", "architectures", "dimensions", "description")
    for name in SPACES:
        space = get_space(name)
        table.add_row(name, f"{space.size():.3g}", str(len(space.dimensions)), space.describe())
    console = Console()
    console.print(table)
    console.print("Also: codesign:SPACE (SPACE's networks x an accelerator's PE array, buffer and dataflow; "
                  "--target accel:BASE) and module:attribute for a space of your own.")


# Command groups, one module each (registered below).
from edgenas.cli import search as _search  # noqa: E402

_search.register(app)
from edgenas.cli import proxies as _proxies  # noqa: E402

_proxies.register(app)
from edgenas.cli import latency as _latency  # noqa: E402

_latency.register(app)
from edgenas.cli import bench as _bench  # noqa: E402

_bench.register(app)
from edgenas.cli import ofa as _ofa  # noqa: E402

_ofa.register(app)
from edgenas.cli import gradient as _gradient  # noqa: E402

_gradient.register(app)
from edgenas.cli import hat as _hat  # noqa: E402

_hat.register(app)
from edgenas.cli import hypernet as _hypernet  # noqa: E402

_hypernet.register(app)


def main() -> None:
    """Entry point: run the app, turning user errors into one line on stderr and exit code 2."""
    try:
        app()  # standalone: usage errors exit 2 with click's message
    except EdgenasError as exc:
        print(f"edgenas: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
