"""The README stays a short front page: at most 200 lines, `make demo` and `make test` its first
two commands, and every relative link pointing to a file of the repository (the manual lives in
docs/, whose own links `mkdocs build --strict` checks)."""

from __future__ import annotations

import re

from tests.helpers.config import PROJECT_ROOT

README = PROJECT_ROOT / "README.md"
MAX_LINES = 200
# [text](target): the target up to the closing parenthesis or a title
LINK = re.compile(r"\[[^\]]*\]\(\s*([^)\s]+)")
FENCE = "```"


def relative_links(text: str) -> list[str]:
    """Link targets that name a file of the repository: no scheme, no mailto, not an anchor alone."""
    targets = LINK.findall(text)
    return [t for t in targets if "://" not in t and not t.startswith(("mailto:", "#"))]


def commands(text: str) -> list[str]:
    """The command lines of the fenced shell blocks, in order, without their comments."""
    found, shell = [], None
    for line in text.splitlines():
        if line.startswith(FENCE):
            shell = None if shell is not None else line[len(FENCE) :].strip() in ("bash", "sh", "shell")
            continue
        command = line.split(" #", 1)[0].strip()
        if shell and command and not command.startswith("#"):
            found.append(command)
    return found


def test_readme_is_at_most_200_lines():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"


def test_every_relative_link_in_the_readme_points_to_an_existing_file():
    links = relative_links(README.read_text(encoding="utf-8"))
    assert any(link.startswith("docs/") for link in links), "the README links to no page of docs/"
    missing = [link for link in links if not (PROJECT_ROOT / link.split("#", 1)[0]).is_file()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_the_readme_first_two_commands_are_make_demo_and_make_test():
    assert commands(README.read_text(encoding="utf-8"))[:2] == ["make demo", "make test"]


def test_links_and_commands_are_read_as_a_reader_sees_them():
    text = (
        "See [the docs](docs/a.md#part), [a site](https://example.org/x.md), [here](#top).\n"
        "```text\nmake nothing\n```\n"
        "```bash\n# a comment line\nmake demo   # the demo\n\nmake test\n```\n"
    )
    assert relative_links(text) == ["docs/a.md#part"]
    assert commands(text) == ["make demo", "make test"]
