"""sandboxd(8), sandboxctl(1) and sandboxd.unit(5) as man(7) source."""

from __future__ import annotations

from supervisor import __version__
from supervisor.docs_gen import roff
from supervisor.docs_gen.cli_model import Command, Option

# The README sections that are the reference of the unit format and of the daemon's config.
UNIT_SECTION = "Unit files"
CONFIG_SECTION = "Daemon configuration"


def summary(description: str) -> str:
    """The NAME line's text: the description's first clause ("Declarative sandbox supervisor"
    of "Declarative sandbox supervisor: runs each ...")."""
    first = " ".join(description.split())
    for stop in (": ", ". ", "; "):
        first = first.split(stop, 1)[0]
    return first.removesuffix(".")


def _header(name: str, section: int, title: str, manual: str) -> list[str]:
    # No date: the same source gives the same page (reproducible builds).
    return [
        f'.TH "{name.upper()}" "{section}" "" "sandboxd {__version__}" "{manual}"',
        ".SH NAME",
        f"{roff.escape(name)} \\- {roff.escape(title)}",
    ]


def _option(option: Option) -> list[str]:
    flags = ", ".join(f"\\fB{roff.escape(f)}\\fR" for f in option.flags)
    if option.metavar:
        value = "{" + ",".join(option.choices) + "}" if option.choices else option.metavar
        flags += f" \\fI{roff.escape(value)}\\fR"
    return [".TP", flags, roff.escape(option.help) or "\\&"]


def _arguments(command: Command) -> list[str]:
    out: list[str] = []
    for pos in command.positionals:
        out += [".TP", f"\\fI{roff.escape(pos.metavar)}\\fR", roff.escape(pos.help) or "\\&"]
    for option in command.options:
        out += _option(option)
    return out


def _synopsis(command: Command) -> list[str]:
    return [".SH SYNOPSIS", roff.escape(command.usage)]


def _see_also(*pages: str) -> list[str]:
    return [
        ".SH SEE ALSO",
        ", ".join(f"\\fB{p.split('(')[0]}\\fR({p.split('(')[1]}" for p in pages),
    ]


def program_page(
    command: Command,
    section: int,
    manual: str,
    see_also: tuple[str, ...],
    extra: tuple[str, str] | None = None,
) -> str:
    """The page of a program: its parser's description, usage, flags and epilog; with verbs,
    one subsection per verb, with its own usage, arguments and epilog. `extra` is a
    (title, Markdown) section added before SEE ALSO."""
    lines = _header(command.prog, section, summary(command.description), manual)
    lines += _synopsis(command)
    lines += [".SH DESCRIPTION", roff.escape(command.description)]
    if command.options or command.positionals:
        lines += [".SH OPTIONS", *_arguments(command)]
    if command.commands:
        lines.append(".SH COMMANDS")
        for verb in command.commands:
            lines += [f'.SS "{roff.escape(verb.name)}"', ".nf", roff.escape(verb.usage), ".fi"]
            lines += [".PP", roff.escape(verb.description or verb.summary)]
            lines += _arguments(verb)
            if verb.epilog:
                lines += [".PP", *roff.preformatted(verb.epilog.strip("\n"))]
    if command.epilog:
        lines += [".SH NOTES", *roff.preformatted(command.epilog.strip("\n"))]
    if extra is not None:
        lines += [f'.SH "{roff.escape(extra[0].upper())}"', *roff.markdown(extra[1])]
    lines += _see_also(*see_also)
    return "\n".join(lines) + "\n"


def unit_page(readme: str) -> str:
    """sandboxd.unit(5): the README's unit file reference, as it is."""
    lines = _header("sandboxd.unit", 5, "sandboxd unit file format", "File Formats")
    lines += [".SH DESCRIPTION", *roff.markdown(roff.section(readme, UNIT_SECTION))]
    lines += _see_also("sandboxd(8)", "sandboxctl(1)")
    return "\n".join(lines) + "\n"


def daemon_page(command: Command, readme: str | None) -> str:
    """sandboxd(8), with the README's configuration reference when there is a README."""
    extra = None if readme is None else ("Configuration", roff.section(readme, CONFIG_SECTION))
    return program_page(
        command, 8, "System Administration", ("sandboxctl(1)", "sandboxd.unit(5)"), extra
    )
