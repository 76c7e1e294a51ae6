"""bash and zsh completion scripts for sandboxd and sandboxctl, from their parsers.

Unit names come from the running daemon (`sandboxctl status --json`, with the same sandboxctl
the user is typing, bounded by `timeout`, since a completion must never hang the shell) or,
when it cannot be reached (not running, or no access to the socket), from the unit files in
the default units directory.
"""

from __future__ import annotations

from pathlib import Path

from supervisor.docs_gen.cli_model import Command, Kind, Option

# `status --json` prints {"units": [{"name": ..., ...}, ...]}; unit names are
# [A-Za-z0-9][A-Za-z0-9_.@-]*, so they never hold a quote to escape.
_NAMES = r"""grep -o '"name": *"[^"]*"' | sed 's/.*"\([^"]*\)"$/\1/'"""


def _names_units(command: Command) -> bool:
    """Whether any argument of the command or its verbs is a unit name (sandboxctl's are,
    and the unit lister asks the sandboxctl being completed)."""
    kinds = [o.kind for o in command.options] + [p.kind for p in command.positionals]
    return Kind.UNIT in kinds or any(_names_units(c) for c in command.commands)


def _ident(prog: str) -> str:
    return "_" + prog.replace("-", "_")


def _shq(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


# --- bash -----------------------------------------------------------------------------------


def _bash_values(options: tuple[Option, ...], units: str) -> list[str]:
    """`case $prev` arms: what to offer after an option that takes a value."""
    arms: list[str] = []
    for o in options:
        if o.kind is Kind.NONE:
            continue
        pattern = "|".join(o.flags)
        if o.kind is Kind.CHOICE:
            body = f'COMPREPLY=($(compgen -W {_shq(" ".join(o.choices))} -- "$cur"))'
        elif o.kind is Kind.PATH:
            body = 'compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- "$cur"))'
        elif o.kind is Kind.UNIT:
            body = f'COMPREPLY=($(compgen -W "$({units})" -- "$cur"))'
        else:
            body = "COMPREPLY=()"
        arms.append(f"        {pattern}) {body}; return ;;")
    return arms


def _bash_spec(command: Command) -> list[str]:
    """Shell assignments describing one (sub)command for the generic completer."""
    flags = " ".join(f for o in command.options for f in o.flags)
    valued = " ".join(f for o in command.options if o.kind is not Kind.NONE for f in o.flags)
    kinds = " ".join(p.kind.value + ("*" if p.repeats else "") for p in command.positionals)
    return [f"flags={_shq(flags)}", f"valued={_shq(valued)}", f"positionals={_shq(kinds)}"]


def bash(command: Command, units_dir: Path) -> str:
    ident = _ident(command.prog)
    verbs = " ".join(c.name for c in command.commands)
    top_flags = " ".join(f for o in command.options for f in o.flags)
    lines = [
        f"# bash completion for {command.prog}: generated from its argparse parser by",
        "# supervisor.docs_gen (do not edit; regenerate).",
        "",
    ]
    if _names_units(command):
        lines += [
            f"{ident}_units() {{",
            "    local out f",
            '    if out=$(timeout 2 "${COMP_WORDS[0]}" status --json 2>/dev/null); then',
            f"        printf '%s\\n' \"$out\" | {_NAMES}",
            "        return",
            "    fi",
            f"    for f in {_shq(str(units_dir))}/*.toml; do",
            "        [[ -e $f ]] || continue",
            "        [[ $f == *@.toml ]] && continue  # a template is not a unit",
            "        f=${f##*/}",
            '        printf "%s\\n" "${f%.toml}"',
            "    done",
            "}",
            "",
        ]
    lines += [
        f"{ident}() {{",
        "    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}",
        "    local verb= start=1 i word flags valued positionals",
        "    COMPREPLY=()",
    ]
    if command.commands:
        lines += [
            "    # The verb: the first word that is not an option.",
            "    for ((i = 1; i < COMP_CWORD; i++)); do",
            "        word=${COMP_WORDS[i]}",
            "        [[ $word == -* ]] || { verb=$word; start=$((i + 1)); break; }",
            "    done",
            "    if [[ -z $verb ]]; then",
            "        case $prev in",
            *_bash_values(command.options, f"{ident}_units"),
            "        esac",
            "        if [[ $cur == -* ]]; then",
            f'            COMPREPLY=($(compgen -W {_shq(top_flags)} -- "$cur"))',
            "        else",
            f'            COMPREPLY=($(compgen -W {_shq(verbs)} -- "$cur"))',
            "        fi",
            "        return",
            "    fi",
            "    case $verb in",
        ]
        for verb in command.commands:
            lines += [
                f"    {verb.name})",
                "        case $prev in",
                *_bash_values(verb.options, f"{ident}_units"),
            ]
            lines += ["        esac", *("        " + a for a in _bash_spec(verb)), "        ;;"]
        lines += ["    *) return ;;", "    esac"]
    else:
        lines += ["    case $prev in", *_bash_values(command.options, f"{ident}_units"), "    esac"]
        lines += ["    " + a for a in _bash_spec(command)]
    lines += [
        "    if [[ $cur == -* ]]; then",
        '        COMPREPLY=($(compgen -W "$flags" -- "$cur"))',
        "        return",
        "    fi",
        "    # Which positional argument is this: count the words before it that are not",
        "    # options or their values; after `--` the rest is a command line of its own.",
        "    local n=0 skip=0 kind= dashdash=0",
        "    for ((i = start; i < COMP_CWORD; i++)); do",
        "        word=${COMP_WORDS[i]}",
        "        if ((skip)); then skip=0; continue; fi",
        "        if [[ $word == -- ]]; then dashdash=$i; break; fi",
        "        if [[ $word == -* ]]; then",
        '            [[ " $valued " == *" $word "* ]] && skip=1',
        "            continue",
        "        fi",
        "        n=$((n + 1))",
        "    done",
        "    local -a kinds  # split, never globbed: unit* is a kind, not a pattern",
        '    read -ra kinds <<<"$positionals"',
        "    if ((dashdash)); then",
        "        kind=path  # after -- and its first word (the command): its arguments",
        "        ((dashdash == COMP_CWORD - 1)) && kind=command",
        "    else",
        "        for ((i = 0; i < ${#kinds[@]}; i++)); do",
        "            kind=${kinds[i]}",
        '            if [[ $kind == *"*" ]] || ((i == n)); then break; fi',
        "            kind=",
        "        done",
        "    fi",
        '    case ${kind%"*"} in',
        f'    unit) COMPREPLY=($(compgen -W "$({ident}_units)" -- "$cur")) ;;',
        '    path) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- "$cur")) ;;',
        '    command) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -c -- "$cur")) ;;',
        "    esac",
        "}",
        "",
        f"complete -F {ident} {command.prog}",
    ]
    return "\n".join(lines) + "\n"


# --- zsh ------------------------------------------------------------------------------------


def _sq(text: str) -> str:
    """Text inside a single-quoted zsh word."""
    return text.replace("'", "'\\''")


def _zq(text: str) -> str:
    """Text inside an _arguments spec (explanation, message) or a _describe name: the
    characters that delimit its fields escaped with a backslash, which zsh removes."""
    for ch in "\\[]:":
        text = text.replace(ch, "\\" + ch)
    return _sq(text)


def _zsh_action(kind: Kind, choices: tuple[str, ...], units: str) -> str:
    if kind is Kind.CHOICE:
        return "(" + " ".join(choices) + ")"
    if kind is Kind.PATH:
        return "_files"
    if kind is Kind.UNIT:
        return units
    if kind is Kind.COMMAND:
        return "_normal"
    return " "


def _zsh_specs(command: Command, units: str) -> list[str]:
    specs: list[str] = []
    for o in command.options:
        help_ = f"[{_zq(o.help)}]" if o.help else ""  # no empty [] for a flag without help
        value = ""
        if o.metavar:
            value = f":{_zq(o.metavar)}:{_zsh_action(o.kind, o.choices, units)}"
        if len(o.flags) > 1:
            excl = "(" + " ".join(o.flags) + ")"
            specs.append(f"'{excl}'{{{','.join(o.flags)}}}'{help_}{value}'")
        else:
            specs.append(f"'{o.flags[0]}{help_}{value}'")
    for i, p in enumerate(command.positionals, start=1):
        action = _zsh_action(p.kind, (), units)
        if p.kind is Kind.COMMAND:
            specs.append(f"'*::{_zq(p.metavar)}:{action}'")
        elif p.repeats:
            specs.append(f"'*:{_zq(p.metavar)}:{action}'")
        else:
            specs.append(f"'{i}:{_zq(p.metavar)}:{action}'")
    return specs


def zsh(command: Command, units_dir: Path) -> str:
    ident = _ident(command.prog)
    units = f"{ident}_units"
    lines = [
        f"#compdef {command.prog}",
        f"# zsh completion for {command.prog}: generated from its argparse parser by",
        "# supervisor.docs_gen (do not edit; regenerate).",
        "",
    ]
    if _names_units(command):
        # The sandboxctl being completed (a venv's, say), kept by the completer before
        # _arguments shifts $words for a verb's arguments.
        lines += [
            f"{units}() {{",
            "    local -a units",
            "    local out",
            f'    local ctl="${{{ident}_cmd:-sandboxctl}}"',
            '    if out=$(timeout 2 "$ctl" status --json 2>/dev/null); then',
            f'        units=(${{(f)"$(print -r -- "$out" | {_NAMES})"}})',
            "    else",
            f"        units=({_shq(str(units_dir))}/*.toml(N:t:r))",
            "        units=(${units:#*@})  # a template is not a unit",
            "    fi",
            "    _wanted units expl unit compadd -a units",
            "}",
            "",
        ]
    lines += [
        f"{ident}() {{",
        "    local curcontext=$curcontext state line expl",
        "    typeset -A opt_args",
    ]
    if command.commands:
        lines.append(f"    local {ident}_cmd=${{words[1]}}")
        lines.append("    local -a verbs=(")
        for verb in command.commands:
            # _describe: "name:description", only the name's colons escaped
            lines.append(f"        '{_zq(verb.name)}:{_sq(verb.summary)}'")
        lines += [
            "    )",
            "    _arguments -C \\",
            *(f"        {s} \\" for s in _zsh_specs(command, units)),
            "        '1:command:->verb' \\",
            "        '*::argument:->args'",
            "    case $state in",
            "    verb) _describe -t commands command verbs ;;",
            "    args)",
            "        curcontext=${curcontext%:*:*}:" + command.prog + "-$words[1]:",
            "        case $words[1] in",
        ]
        for verb in command.commands:
            specs = _zsh_specs(verb, units)
            lines.append(f"        {verb.name}) _arguments \\")
            lines += [f"            {s} \\" for s in specs[:-1]]
            lines.append(f"            {specs[-1]} ;;" if specs else "            ;;")
        lines += ["        esac", "        ;;", "    esac"]
    else:
        specs = _zsh_specs(command, units)
        lines.append("    _arguments \\")
        lines += [f"        {s} \\" for s in specs[:-1]]
        lines.append(f"        {specs[-1]}")
    lines += ["}", "", f'{ident} "$@"']
    return "\n".join(lines) + "\n"
