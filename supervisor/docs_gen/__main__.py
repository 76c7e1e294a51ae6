"""`python -m supervisor.docs_gen [--readme README.md] OUTDIR`: write the pages and completions.

OUTDIR gets man/{sandboxd.8,sandboxctl.1,sandboxd.unit.5}, bash/{sandboxd,sandboxctl} and
zsh/{_sandboxd,_sandboxctl}. The unit page needs the README (it is not part of the installed
package); without --readme it is left out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from supervisor.docs_gen import generate


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m supervisor.docs_gen", description=__doc__)
    p.add_argument("--readme", type=Path, help="the README: the unit(5) page, the config reference")
    p.add_argument("outdir", type=Path)
    args = p.parse_args(argv)
    readme = None
    if args.readme is not None:
        try:
            readme = args.readme.read_text(encoding="utf-8")
        except OSError as exc:
            print(f"docs_gen: {args.readme}: {exc.strerror}", file=sys.stderr)
            return 1
    try:
        files = generate.write(args.outdir, readme)
    except (OSError, ValueError) as exc:
        print(f"docs_gen: {exc}", file=sys.stderr)
        return 1
    for path in files:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
