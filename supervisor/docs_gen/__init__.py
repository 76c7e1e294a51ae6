"""Man pages and shell completions, generated at build/install time from their one source.

`sandboxd(8)` and `sandboxctl(1)` and the bash/zsh completions come from the argparse parsers
that `--help` prints (supervisor/daemon.py `build_parser`, supervisor/cli/main.py
`build_parser`), so a verb or flag added there reaches them with no list to update;
`sandboxd.unit(5)` is the README's "Unit files" section, the unit format's reference. Run
`python -m supervisor.docs_gen --readme README.md OUTDIR` (packaging/install.sh and
packaging/build-deb.sh do).
"""
