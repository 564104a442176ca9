"""README and the guides stay true: every relative link resolves (the file, and a `#anchor` to
one of its headings by GitHub's rule), every `xp ...` line in a code block of README parses with
the real CLI, and README stays a front door (at most 250 lines)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

MAIN = Path(__file__).resolve().parents[1]
PAGES = [MAIN / "README.md", *sorted((MAIN / "docs").glob("*.md"))]
LINK = re.compile(r"\[(?:[^\]\n]|`[^`\n]*`)*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """The text outside fenced code blocks (links and headings in code do not count)."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        out.append("" if fenced else line)
    return "\n".join(out)


def code_lines(text: str) -> list[str]:
    """The lines inside fenced code blocks."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced:
            out.append(line)
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor in a page, repeated headings numbered as GitHub numbers them."""
    seen: dict[str, int] = {}
    out = set()
    for line in prose(page.read_text()).splitlines():
        m = re.match(r"#{1,6}\s+(.+?)\s*#*$", line)
        if m:
            s = slug(m.group(1))
            out.add(s if s not in seen else f"{s}-{seen[s]}")
            seen[s] = seen.get(s, 0) + 1
    return out


def broken_links(page: Path) -> list[str]:
    """The relative links of a page that lead nowhere."""
    broken = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no file {dest})")
        elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
            broken.append(f"{target} (no heading #{anchor} in {dest.name})")
    return broken


def test_there_are_guides_and_readme_is_a_front_door():
    assert len(PAGES) >= 10
    lines = (MAIN / "README.md").read_text().count("\n")
    assert lines <= 250, f"README.md has {lines} lines: move the detail into a guide in docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    assert broken_links(page) == []


def test_the_link_check_sees_a_broken_file_and_a_broken_anchor(tmp_path):
    (tmp_path / "a.md").write_text("# Two words\n\n[ok](#two-words) [bad](#nope) [gone](b.md)\n")
    assert anchors(tmp_path / "a.md") == {"two-words"}
    assert [b.split()[0] for b in broken_links(tmp_path / "a.md")] == ["#nope", "b.md"]


def readme_commands() -> list[str]:
    """Every `xp ...` command line in README's code blocks, placeholders filled in."""
    out = []
    for line in code_lines((MAIN / "README.md").read_text()):
        line = line.strip().removeprefix("$ ")
        if line.startswith("xp "):
            out.append(re.sub(r"<[^>]+>", "0123abcd", line))
    return out


def parse(command: str) -> None:
    """Parse an `xp ...` line with the CLI's own parser, running nothing (raises click's error)."""
    import typer

    from xp.cli import app

    words = shlex.split(command, comments=True)[1:]
    group = typer.main.get_command(app)
    ctx = group.make_context("xp", list(words), resilient_parsing=False)
    name, *rest = [*ctx._protected_args, *ctx.args]
    verb = group.get_command(ctx, name)
    assert verb is not None, f"xp has no verb {name!r}"
    verb.make_context(name, rest, parent=ctx)


def test_readme_shows_every_verb():
    verbs = {c.split()[1] for c in readme_commands()}
    assert {"train", "repeat", "report", "compare", "search", "promote", "reproduce"} <= verbs


@pytest.mark.parametrize("command", readme_commands())
def test_every_xp_command_in_readme_parses(command):
    parse(command)


def test_the_parse_check_refuses_a_wrong_option():
    from typer._click import exceptions as click_errors

    for wrong in ("xp report 0123abcd --no-such-option", "xp repeat digits --jobs 0",
                  "xp compare --metric"):  # fmt: skip
        with pytest.raises(click_errors.ClickException):
            parse(wrong)
