"""`sandboxctl images [prune] [--json]`: the images units run from, and removing unused layers."""

from __future__ import annotations

import sys

from supervisor.cli import jsonwrite, render, simple, verbs
from supervisor.cli.client import Client, exits
from supervisor.errors import EXIT_OK

TYPE_CHECKING = False  # typing stays unimported on the client path (cli/__init__.py)
if TYPE_CHECKING:
    import argparse
    from typing import Any

HELP = verbs.HELP["images"]
EPILOG = """\
One row per image a unit names (by reference and digest): NAME TAG DIGEST SIZE UNITS, where SIZE
is what its unpacked layers take on disk ("-" before its first start: layers are unpacked then)
and UNITS the units on it. A last line counts the stored layers no unit uses. `prune` removes
those, never a layer a unit names or a run still runs on; the images themselves (the layouts
and archives skopeo wrote) are the operator's and never touched.

EXAMPLE:
  sandboxctl images
  sandboxctl images prune            # after editing units onto new images
  sandboxctl images --json | jq -r '.images[] | "\\(.name):\\(.tag) \\(.units | join(","))"'
"""


ACTIONS = ["prune"]
SIMPLE = simple.Spec("action", "?", choices=ACTIONS, flags={"--json": ("json", True)})


def register(subparsers: Any) -> None:
    import argparse  # noqa: PLC0415  (argparse is loaded already when a parser is built)

    p = subparsers.add_parser(
        "images",
        help=HELP,
        description=HELP,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "action", nargs="?", choices=ACTIONS, metavar="prune",
        help="remove the stored layers no unit uses",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the API's answer")
    p.set_defaults(run=run)


def table(answer: dict[str, Any]) -> list[str]:
    rows = [
        [
            image["name"],
            image["tag"] or "-",
            image["digest"].removeprefix("sha256:")[:12],
            render.size(image["size"]) if image["unpacked"] else "-",
            ",".join(image["units"]),
        ]
        for image in answer["images"]
    ]
    header = ["NAME", "TAG", "DIGEST", "SIZE", "UNITS"]
    lines = render.table(header, rows, [None] * len(rows), False)
    unused = answer["unused"]
    if unused["layers"]:
        lines.append(f"{unused['layers']} unused layers, {render.size(unused['size'])} "
                     "(sandboxctl images prune removes them)")  # fmt: skip
    return lines


@exits
def run(args: argparse.Namespace) -> int:
    client = Client()
    if args.action == "prune":
        answer = client.request("POST", "/v1/images/prune")
        text = [f"removed {answer['removed']} layers, {render.size(answer['freed'])} freed"]
    else:
        answer = client.request("GET", "/v1/images")
        text = table(answer)
    if args.json:
        sys.stdout.write(jsonwrite.dumps(answer) + "\n")
    else:
        sys.stdout.write("\n".join(map(render.safe, text)) + "\n")
    return EXIT_OK
