"""`sandboxctl fleet status|apply|diff`: the fleet's etcd keys, without any daemon.

`status` reads every node's reports (PREFIX/status/<node>/<unit>); `apply DIR` makes one
target's unit keys (a node's, or all/) what the directory holds, in one etcd transaction that
fails whole if any of those keys changed since they were read; `diff DIR` says what apply
would do. The directory is validated first, exactly as `sandboxctl validate` does (the daemon
validates each value again, as a unit file).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import re
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from supervisor.cli import render, verbs
from supervisor.errors import EXIT_FAILURE, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE

if TYPE_CHECKING:
    from supervisor.cluster.gateway import Gateway

HELP = verbs.HELP["fleet"]
EPILOG = """\
status: one row per unit every node reports: NODE UNIT STATE RESTARTS LAST-EXIT REPORTED (the
age of the report; a node whose lease expired has no rows). --json prints the reports.
apply DIR: validate the unit files in DIR (plain NAME.toml files; templates and drop-ins are
composed on one host only) and make the target's keys exactly those units, in one transaction:
new and changed units are written, units no longer in DIR deleted, all or nothing.
diff DIR: what apply would do (+ new, ~ changed, - deleted), nothing written.
The target is one node (--node N: PREFIX/nodes/N/units/) or every node (--all: PREFIX/all/units/).

exit status: 0 ok (diff: no difference); 1 invalid units, a failed transaction, or (diff) a
difference; 2 usage; 5 no etcd member answered

EXAMPLE:
  sandboxctl fleet status --endpoints http://10.0.0.1:2379,http://10.0.0.2:2379
  sandboxctl fleet diff units/web-tier --all --endpoints http://10.0.0.1:2379
  sandboxctl fleet apply units/node-3 --node node-3 --endpoints http://10.0.0.1:2379
"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "fleet",
        help=HELP,
        description=HELP,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", choices=["status", "apply", "diff"], help="what to do")
    p.add_argument("dir", nargs="?", type=Path, metavar="DIR", help="unit files (apply, diff)")
    p.add_argument(
        "--endpoints", required=True, metavar="URL[,URL...]",
        help="etcd members' client URLs, comma-separated",
    )  # fmt: skip
    p.add_argument("--prefix", default="/sandboxd/v1", help="the key prefix (default: %(default)s)")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--node", metavar="N", help="apply/diff to node N's units")
    target.add_argument("--all", action="store_true", help="apply/diff to every node's units")
    p.add_argument("--ca", metavar="PATH", help="TLS: the CA of the members' certificates")
    p.add_argument("--cert", metavar="PATH", help="TLS: a client certificate (with --key)")
    p.add_argument("--key", metavar="PATH", help="TLS: the client certificate's key")
    p.add_argument("--json", action="store_true", help="status: print the reports as JSON")
    p.set_defaults(run=run)


T = TypeVar("T")
MAX_TXN_OPS = 128  # etcd's default --max-txn-ops


def run(args: argparse.Namespace) -> int:
    # Imported here: `sandboxctl --help` loads every verb, and aiohttp and pydantic are most
    # of a fleet verb's start.
    from supervisor.cluster import gateway as gw  # noqa: PLC0415
    from supervisor.config import NODE_NAME  # noqa: PLC0415

    problem = _usage(args, NODE_NAME)
    if problem:
        print(f"sandboxctl: fleet {args.action}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    endpoints = [e.strip() for e in args.endpoints.split(",") if e.strip()]
    client = gw.Gateway(endpoints, gw.tls_context(args.ca, args.cert, args.key))

    async def with_client(work: Callable[[Gateway], Awaitable[T]]) -> T:
        try:
            return await work(client)
        finally:
            await client.close()

    try:
        if args.action == "status":
            return asyncio.run(with_client(lambda c: _status(c, args)))
        plan = _read_dir(args.dir)
        if plan is None:
            return EXIT_FAILURE
        return asyncio.run(with_client(lambda c: _apply(c, args, plan)))
    except gw.Unreachable as exc:
        print(f"sandboxctl: etcd unreachable: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except gw.EtcdError as exc:
        print(f"sandboxctl: etcd: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _usage(args: argparse.Namespace, node_name: str) -> str | None:
    if args.action == "status":
        return "takes no DIR" if args.dir is not None else None
    if args.dir is None:
        return "needs DIR, a directory of unit files"
    if not args.node and not args.all:
        return "needs --node N or --all"
    if args.node and not re.fullmatch(node_name, args.node):
        return f"{args.node!r} is not a node name (letters, digits, '_', '.', '-')"
    if (args.cert is None) != (args.key is None):
        return "--cert and --key go together"
    return None


# -- status --------------------------------------------------------------------------------


async def _status(client: Gateway, args: argparse.Namespace) -> int:
    from supervisor.cluster import keys  # noqa: PLC0415

    base = keys.status_dir(args.prefix)
    _revision, kvs = await client.range(base, keys.prefix_end(base))
    reports = []
    for kv in kvs:
        node, _, unit = kv.key[len(base) :].partition("/")
        try:
            data = json.loads(kv.value)
        except ValueError:
            data = {}
        reports.append((data if isinstance(data, dict) else {}) | {"node": node, "name": unit})
    if args.json:
        sys.stdout.write(json.dumps({"reports": reports}) + "\n")
        return EXIT_OK
    now = dt.datetime.now(dt.UTC)
    rows = [
        [r["node"], r["name"], str(r.get("state", "?")), str(r.get("restarts", "-")),
         r.get("last_exit") or "-", render.duration(render.since(r.get("reported_at"), now))]
        for r in reports
    ]  # fmt: skip
    header = ["NODE", "UNIT", "STATE", "RESTARTS", "LAST-EXIT", "REPORTED"]
    sys.stdout.write("\n".join(render.table(header, rows, [None] * len(rows), False)) + "\n")
    return EXIT_OK


# -- apply, diff ---------------------------------------------------------------------------


@dataclass
class Plan:
    units: dict[str, bytes] = field(default_factory=dict)  # name -> the file's bytes


def _read_dir(directory: Path) -> Plan | None:
    """The directory's units, validated as the daemon would (host checks aside: they are for
    the node); None (problems printed) when any is invalid or not a plain unit file."""
    from supervisor.unit.loader import UnitFileError, UnitLoader  # noqa: PLC0415

    try:
        loaded = UnitLoader(host_checks=False).load_directory(directory)
    except UnitFileError as exc:
        for error in exc.errors:
            print(render.safe(str(error)), file=sys.stderr)
        return None
    problems = [str(e) for errs in loaded.errors.values() for e in errs]
    problems += [str(e) for errs in loaded.template_errors.values() for e in errs]
    for name, files in sorted(loaded.sources.items()):
        problems.append(
            f"{files[0]}: file: {name} is made of several files ({', '.join(files)}); fleet "
            "apply takes plain unit files (write the composed unit: sandboxctl cat --effective)"
        )
    for problem in problems:
        print(render.safe(problem), file=sys.stderr)
    if problems:
        return None
    plan = Plan()
    for name, spec in sorted(loaded.specs.items()):
        with open(spec.path, "rb") as f:
            plan.units[name] = f.read()
    return plan


async def _apply(client: Gateway, args: argparse.Namespace, plan: Plan) -> int:
    from supervisor.cluster import gateway as gw  # noqa: PLC0415
    from supervisor.cluster import keys  # noqa: PLC0415

    base = keys.all_units(args.prefix) if args.all else keys.node_units(args.prefix, args.node)
    end = keys.prefix_end(base)
    revision, kvs = await client.range(base, end)
    current = {kv.key[len(base) :]: kv.value for kv in kvs}
    added = sorted(plan.units.keys() - current.keys())
    changed = sorted(n for n in plan.units.keys() & current.keys() if plan.units[n] != current[n])
    deleted = sorted(current.keys() - plan.units.keys())
    lines = [f"+ {n}" for n in added] + [f"~ {n}" for n in changed]
    lines += [f"- {n}" for n in deleted]
    where = f"{base} (revision {revision})"
    if args.action == "diff":
        for line in lines:
            print(render.safe(line))
        print(f"{len(lines)} to change in {where}", file=sys.stderr)
        return EXIT_FAILURE if lines else EXIT_OK
    if not lines:
        print(f"nothing to change in {where}")
        return EXIT_OK
    ops: list[dict[str, Any]] = [
        {"request_put": {"key": gw.b64(base + n), "value": gw.b64(plan.units[n])}}
        for n in added + changed
    ]
    ops += [{"request_delete_range": {"key": gw.b64(base + n)}} for n in deleted]
    # All or nothing, and only over what was read: no key under the target was written since.
    unchanged = {
        "key": gw.b64(base), "range_end": gw.b64(end), "target": "MOD",
        "result": "LESS", "mod_revision": str(revision + 1),
    }  # fmt: skip
    if len(ops) > MAX_TXN_OPS:
        print(f"sandboxctl: {len(ops)} changes to {base} in one transaction: more than etcd's "
              f"default --max-txn-ops ({MAX_TXN_OPS}) allows; etcd may refuse it (raise the "
              "limit on the members, or apply in parts)", file=sys.stderr)  # fmt: skip
    if not await client.txn([unchanged], ops):
        print(f"sandboxctl: {base} changed while this apply ran; nothing was written: run it "
              "again", file=sys.stderr)  # fmt: skip
        return EXIT_FAILURE
    for line in lines:
        print(render.safe(line))
    print(f"applied {len(lines)} changes to {base}")
    return EXIT_OK
