"""Every generated file, by its path relative to the output directory."""

from __future__ import annotations

from pathlib import Path

from supervisor.config import DaemonConfig
from supervisor.docs_gen import cli_model, completion, manpages

# Where completion falls back to when the daemon cannot be asked: the daemon's default.
UNITS_DIR = DaemonConfig().units_dir


def render(readme: str | None, units_dir: Path = UNITS_DIR) -> dict[str, str]:
    """Relative path -> content. `readme` None leaves out the unit(5) page."""
    ctl, daemon = cli_model.sandboxctl(), cli_model.sandboxd()
    files = {
        "man/sandboxctl.1": manpages.program_page(
            ctl, 1, "User Commands", ("sandboxd(8)", "sandboxd.unit(5)")
        ),
        "man/sandboxd.8": manpages.daemon_page(daemon, readme),
        "bash/sandboxctl": completion.bash(ctl, units_dir),
        "bash/sandboxd": completion.bash(daemon, units_dir),
        "zsh/_sandboxctl": completion.zsh(ctl, units_dir),
        "zsh/_sandboxd": completion.zsh(daemon, units_dir),
    }
    if readme is not None:
        files["man/sandboxd.unit.5"] = manpages.unit_page(readme)
    return files


def write(outdir: Path, readme: str | None) -> list[Path]:
    written = []
    for rel, text in render(readme).items():
        path = outdir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
