"""roff for man(7): escaping, and the subset of Markdown the README's reference uses.

The subset: `##`/`###` headings, paragraphs, `-` lists, fenced code blocks, pipe tables (the
first column becomes the tag of a `.TP` entry, the others its lines), and inline `code`,
**bold** and [links](url) (the link text is kept).
"""

from __future__ import annotations

import re

_INLINE = re.compile(r"`([^`]+)`|\*\*(.+?)\*\*|\[([^\]]+)\]\([^)]*\)")


def escape(text: str) -> str:
    """Plain text as roff: backslashes and hyphens literal, no line read as a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    # Non-ASCII as named code points: troff reads its input as Latin-1 unless preconv runs.
    text = "".join(c if ord(c) < 128 else f"\\[u{ord(c):04X}]" for c in text)
    return "\n".join(
        "\\&" + line if line.startswith((".", "'")) else line for line in text.split("\n")
    )


def inline(text: str) -> str:
    """Markdown inline markup as roff fonts (code and bold in bold)."""
    out: list[str] = []
    pos = 0
    for m in _INLINE.finditer(text):
        out.append(escape(text[pos : m.start()]))
        code, bold, link = m.groups()
        if link is not None:
            out.append(inline(link))
        else:
            out.append("\\fB" + escape(code if code is not None else bold) + "\\fR")
        pos = m.end()
    out.append(escape(text[pos:]))
    return "".join(out)


def preformatted(text: str) -> list[str]:
    return [".RS 4", ".nf", *(escape(line) or "\\&" for line in text.split("\n")), ".fi", ".RE"]


def _cells(row: str) -> list[str]:
    """A table row's cells; `\\|` is a literal bar inside a cell."""
    row = row.strip().removeprefix("|").removesuffix("|")
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", row)]


def _table(rows: list[str]) -> list[str]:
    header = [h.lower() for h in _cells(rows[0])]
    out: list[str] = []
    for row in rows[2:]:  # rows[1] is the |---| rule
        cells = _cells(row)
        out += [".TP", inline(cells[0])]
        for name, cell in zip(header[1:], cells[1:], strict=False):
            out += [".br", inline(cell) if name == "meaning" else f"{name}: {inline(cell)}"]
    return out


def markdown(text: str) -> list[str]:
    """Markdown (the subset above) as man(7) lines."""
    out: list[str] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            end = lines.index("```", i + 1) if "```" in lines[i + 1 :] else len(lines)
            out += preformatted("\n".join(lines[i + 1 : end]))
            i = end + 1
        elif line.startswith("#"):
            title = line.lstrip("#").strip()
            out += [(".SH " if line.startswith("## ") else ".SS ") + '"' + inline(title) + '"']
            i += 1
        elif line.startswith("|"):
            end = i
            while end < len(lines) and lines[end].startswith("|"):
                end += 1
            out += _table(lines[i:end])
            out.append(".PP")
            i = end
        elif line.startswith("- "):
            item = [line[2:]]
            i += 1
            while i < len(lines) and lines[i].startswith("  ") and lines[i].strip():
                item.append(lines[i].strip())
                i += 1
            out += [".IP \\(bu 2", inline(" ".join(item))]
        elif not line.strip():
            i += 1
            if out and out[-1] not in (".PP",) and not out[-1].startswith((".SH", ".SS")):
                out.append(".PP")
        else:
            para = []
            while (
                i < len(lines)
                and lines[i].strip()
                and not lines[i].startswith(("#", "|", "```", "- "))
            ):
                para.append(lines[i].strip())
                i += 1
            out.append(inline(" ".join(para)))
    while out and out[-1] == ".PP":
        out.pop()
    return out


def section(readme: str, title: str) -> str:
    """The body of the README's `## title` section (up to the next `## `)."""
    lines = readme.split("\n")
    try:
        start = lines.index(f"## {title}") + 1
    except ValueError:
        raise ValueError(f"README has no '## {title}' section") from None
    end = next((j for j in range(start, len(lines)) if lines[j].startswith("## ")), len(lines))
    return "\n".join(lines[start:end]).strip("\n")
