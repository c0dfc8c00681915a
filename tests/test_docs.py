"""The docs promise only what exists: the flags of ``antiphon`` and ``antiphon-edge``, the ``ANTIPHON_*`` variables,
the HTTP routes, the WebSocket message types and fields, the bounds of serve's settings and the pages and sections
that README.md and docs/*.md name. Nothing is started: the parsers are built as the commands build them, the routes
read from the Starlette app, the WebSocket types and fields from the transport.

How a flag is tied to its command:

- a command line, in a code block or in inline code (``antiphon serve --grace-s 10``,
  ``.venv/bin/antiphon train text ...``, ``ANTIPHON_API_KEY=... antiphon-edge chat ...``): each flag must be one of
  the command it follows (``antiphon eval evaluator|dcgan ...`` and a placeholder such as ``FAMILY``: of each of
  them); a word where a subcommand goes must be one;
- a flag alone in inline code in the prose (`` `--max-streams` ``): one of the commands :data:`CONTEXTS` gives the
  section it is in (a flag of any of them);
- a command line of another program (``pip install --target ...``) is not read, and neither is an inline code span
  that starts with another program's name.
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from edge_client import cli as edge_cli
from server import cli as server_cli
from server import settings
from server.engine.registry import ModelRegistry
from server.metrics import Recorder
from server.transport import websocket
from server.transport.http import HttpTransport

REPO = Path(__file__).resolve().parents[1]
DOCS = (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")))
PROGRAMS = {"antiphon": server_cli.build_parser, "antiphon-edge": edge_cli.build_parser}
MODULES = {"server.cli": "antiphon", "edge_client": "antiphon-edge", "edge_client.cli": "antiphon-edge"}
# The benchmark scripts build their parsers inside their main functions: their flags are read from the source.
SCRIPTS = "benchmarks/*.py"

IMAGE_FAMILIES = ("evaluator", "dcgan", "vae", "vaegan", "rbm")

# The commands whose flags a section's prose may name, by document and heading (the nearest heading that has an
# entry wins; None: the document's own). A flag of any of them passes. "*" matches any subcommand.
CONTEXTS: dict[str, dict[str | None, tuple[str, ...]]] = {
    "README.md": {
        "Train": ("antiphon train text",),
        "Evaluate": ("antiphon eval text",),
        "Sample": ("antiphon sample text",),
        "Serve": ("antiphon serve",),
        "Audio: the WaveNet": ("antiphon serve", "antiphon * audio"),
        "Discriminators and export": ("antiphon export",),
    },
    "architecture.md": {None: ("antiphon train *",)},
    "audio-model.md": {None: ("antiphon * audio",)},
    "discriminators.md": {
        None: ("antiphon train *", "antiphon eval *"),
        "Keyword spotting (`server/kws/`)": ("antiphon train kws", "antiphon eval kws"),
        # the committed discriminator is measured against the text model it reads, and that model's own runs
        "Text discriminator (`server/textdisc/`)": ("antiphon * textdisc", "antiphon train text"),
        "Small generator": ("antiphon train text",),
        "What is left": ("antiphon * kws", "antiphon * textdisc"),
    },
    # the export of a model names the run that made it (`--init` of `antiphon train text`)
    "export.md": {None: ("antiphon export", "antiphon train *")},
    "edge.md": {
        None: ("antiphon-edge *", "antiphon export"),
        "Images: generate and judge": ("antiphon-edge generate image", "antiphon-edge classify image"),
        "Audio": ("antiphon-edge listen", "antiphon-edge classify audio"),
        "listen": ("antiphon-edge listen",),
        # the server's own `--max-tokens` bounds a turn too
        "chat": ("antiphon-edge chat", "antiphon serve"),
        "bench": ("antiphon-edge bench",),
    },
    "grpc.md": {None: ("antiphon serve",)},
    "http-api.md": {None: ("antiphon serve",)},
    "image-models.md": {
        None: (
            *(f"antiphon {command} {family}" for command in ("train", "eval") for family in IMAGE_FAMILIES),
            "antiphon sample image",
        ),
    },
    "operations.md": {
        None: ("antiphon serve",),
        "TLS": ("antiphon serve", "antiphon-edge chat"),
        "Soak": ("antiphon serve", "benchmarks/soak.py"),
    },
    "serving.md": {None: ("antiphon serve",)},
    "text-model.md": {None: ("antiphon * text",)},
    "websocket-protocol.md": {None: ("antiphon serve",)},
}
# Flags in the prose that belong to no command of this project.
OTHER_FLAGS = {("architecture.md", "--dist"): "pytest-xdist's, in how `make test` runs the tests"}
# Variables the docs name that are no setting and are read by nothing, with why they are named.
OTHER_VARIABLES = {"ANTIPHON_API_KEYS": "operations.md quotes the warning a misspelt variable gets"}
# Paths the docs name as not served.
NOT_ROUTES = {"/v1/embeddings": "http-api.md's example of a path the server answers 404"}

FLAG = re.compile(r"(?<![\w-])--[A-Za-z][\w-]*")  # in the prose; a short one there is often no flag (`-log p`)
ONE_FLAG = re.compile(r"--?[A-Za-z][\w-]*(=.*)?")
ENV = re.compile(r"ANTIPHON_[A-Z0-9_*]*[A-Z0-9*]")
PATH = re.compile(r"(?:\b(GET|POST|DELETE)\s+)?(?<![\w.:])(/v1/[\w{}.-]*[\w}](?:/[\w{}.-]*[\w}])*)")
SPAN = re.compile(r"(`+)(.+?)\1")
ENDS = {"|", "||", "&&", ";", "&", ">", ">>", "2>&1", "<"}
WRAPPERS = {"nohup", "env", "sudo", "exec", "time"}


# -- reading the docs ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Block:
    """A paragraph of prose or a code block, with the headings it is under."""

    doc: str
    headings: tuple[str, ...]
    code: bool
    text: str

    @property
    def where(self) -> str:
        return f"{self.doc} ({self.headings[-1] if self.headings else 'top'})"

    def units(self) -> list[str]:
        """What may be a command line: each line of a code block (continuations joined), or each inline code span."""
        if self.code:
            return self.text.replace("\\\n", " ").splitlines()
        return [m.group(2).strip() for m in SPAN.finditer(self.text.replace("\n", " "))]


@cache
def blocks(path: Path) -> tuple[Block, ...]:
    """The paragraphs and code blocks of a Markdown file, in order."""
    found: list[Block] = []
    headings: list[str] = []
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            found.append(Block(path.name, tuple(headings), False, "\n".join(paragraph)))
            paragraph.clear()

    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = re.match(r"\s*(`{3,}|~{3,})", line)
        heading = re.match(r"(#+) (.*)", line)
        if fence:
            flush()
            code = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(fence.group(1)):
                code.append(lines[i])
                i += 1
            found.append(Block(path.name, tuple(headings), True, "\n".join(code)))
        elif heading:
            flush()
            headings[len(heading.group(1)) - 1 :] = [heading.group(2).strip()]
        elif not line.strip():
            flush()
        else:
            paragraph.append(line.strip())
        i += 1
    flush()
    return tuple(found)


def all_blocks() -> Iterator[Block]:
    for path in DOCS:
        yield from blocks(path)


def words(unit: str) -> list[str]:
    """A command line's words, as a shell splits them (``#`` starts a comment); [] if it does not split."""
    try:
        return shlex.split(unit, comments=True)
    except ValueError:
        return []


def command_of(tokens: list[str]) -> tuple[str, list[str]] | None:
    """(program, its arguments) where ``tokens`` run ``antiphon``, ``antiphon-edge``, ``python -m server.cli`` or a
    benchmark script, after any ``NAME=value`` and wrappers such as ``nohup env``; else None."""
    i = 0
    while i < len(tokens) and (re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", tokens[i]) or tokens[i] in WRAPPERS):
        i += 1
    if i == len(tokens):
        return None
    first = tokens[i]
    name = first.rsplit("/", 1)[-1]
    if name in PROGRAMS and (first == name or first.endswith("/bin/" + name)):
        return name, tokens[i + 1 :]
    if "-m" in tokens[i:] and tokens.index("-m", i) + 1 < len(tokens):
        module = tokens[tokens.index("-m", i) + 1]
        if module in MODULES:
            return MODULES[module], tokens[tokens.index("-m", i) + 2 :]
    for token in tokens[i : i + 2]:  # the script, or python and the script
        if fnmatch.fnmatch(token, SCRIPTS):
            return token, tokens[tokens.index(token) + 1 :]
    return None


def segments(tokens: list[str]) -> Iterator[list[str]]:
    """The commands of a line: its words cut at pipes, ``;``, ``&&`` and redirections."""
    part: list[str] = []
    for token in tokens:
        if token in ENDS or token.startswith((">", "2>")):
            yield part
            part = []
        else:
            part.append(token)
    yield part


def command_lines() -> Iterator[tuple[Block, str, list[str]]]:
    """(block, program, arguments) of every command line of ours the docs hold."""
    for block in all_blocks():
        for unit in block.units():
            for part in segments(words(unit)):
                found = command_of(part)
                if found is not None:
                    yield block, *found


# -- what exists ---------------------------------------------------------------------------------------------------
def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


@cache
def parsers() -> dict[str, argparse.ArgumentParser]:
    """Every command and subcommand by its name (``antiphon train text``), as the entry points build them."""
    found: dict[str, argparse.ArgumentParser] = {}

    def walk(name: str, parser: argparse.ArgumentParser) -> None:
        found[name] = parser
        for sub, child in subcommands(parser).items():
            walk(f"{name} {sub}", child)

    for program, build in PROGRAMS.items():
        walk(program, build())
    return found


@cache
def script_flags(script: str) -> frozenset[str]:
    """The flags a benchmark script declares (``add_argument("--minutes", ...)``), read from its source."""
    path = REPO / script
    if not path.is_file():
        return frozenset()
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument":
            found.update(a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str))
    return frozenset(found | {"-h", "--help"})


def flags_of(command: str) -> frozenset[str]:
    if command in parsers():
        return frozenset(s for action in parsers()[command]._actions for s in action.option_strings)
    return script_flags(command)


def context(block: Block) -> tuple[str, ...] | None:
    table = CONTEXTS.get(block.doc, {})
    for heading in reversed(block.headings):
        if heading in table:
            return table[heading]
    return table.get(None)


def commands_matching(patterns: tuple[str, ...]) -> list[str]:
    names = [*parsers(), *(str(p.relative_to(REPO)) for p in REPO.glob(SCRIPTS))]
    return [name for name in names if any(fnmatch.fnmatch(name, pattern) for pattern in patterns)]


# -- checks --------------------------------------------------------------------------------------------------------
def command_problems(program: str, arguments: list[str]) -> list[str]:
    """What of ``program arguments`` does not exist: an unknown subcommand, a flag its command lacks."""
    if program not in PROGRAMS:  # a benchmark script: its flags only
        known = script_flags(program)
        return [f"{flag} is not a flag of {program}" for flag in option_words(arguments) if flag not in known]
    current = [program]
    problems: list[str] = []
    skip_value = False
    for raw in arguments:
        token = raw.strip("[]")
        is_flag = ONE_FLAG.fullmatch(token) is not None
        if skip_value and not is_flag:  # a flag's value, never a subcommand
            skip_value = False
            continue
        if is_flag:
            flag = token.split("=", 1)[0]
            missing = [name for name in current if flag not in flags_of(name)]
            problems += [f"{flag} is not a flag of {name}" for name in missing]
            actions = [a for name in current for a in parsers()[name]._actions if flag in a.option_strings]
            skip_value = "=" not in token and bool(actions) and actions[0].nargs != 0
            continue
        choices = subcommands(parsers()[current[0]])
        if not choices:
            continue  # a positional argument of the command
        named = token.split("|")
        if all(name in choices for name in named):
            current = [f"{c} {name}" for c in current for name in named]
        elif re.fullmatch(r"[A-Z]+", token):  # a placeholder (FAMILY, MODEL): each of them
            current = [f"{c} {name}" for c in current for name in choices]
        else:
            problems.append(f"{token!r} is not a subcommand of {' or '.join(current)}")
            break
    return problems


def option_words(arguments: list[str]) -> list[str]:
    return [token.strip("[]").split("=", 1)[0] for token in arguments if ONE_FLAG.fullmatch(token.strip("[]"))]


def prose_flags() -> Iterator[tuple[Block, str]]:
    """(block, flag) of each flag in an inline code span of the prose that is not a command line (one that starts
    with a flag: `` `--resume --snapshot PATH` ``, `` `--device auto|cpu|cuda` ``)."""
    for block in all_blocks():
        if block.code:
            continue
        for unit in block.units():
            if unit.startswith("--"):
                for flag in FLAG.findall(unit):
                    yield block, flag


def documented_variables() -> Iterator[tuple[Block, str]]:
    for block in all_blocks():
        for name in ENV.findall(block.text):
            yield block, name


@cache
def routes() -> list[tuple[re.Pattern[str], frozenset[str]]]:
    """The HTTP app's routes, as (path pattern, methods)."""
    app = HttpTransport(ModelRegistry(), lambda: True, metrics=Recorder()).app
    while not isinstance(app, Starlette):  # the middleware around it
        app = app.app  # type: ignore[attr-defined]
    found = []
    for route in app.routes:
        if isinstance(route, Route):  # not the page's files (a Mount)
            found.append((route.path_regex, frozenset(route.methods or ())))
    return found


def websocket_table(heading: str) -> dict[str, list[str]]:
    """The rows of the table under ``heading`` in docs/websocket-protocol.md whose first column is ``type``, by the
    type (its cells after it); a row whose type is not in code (``binary``) is left out."""
    rows = {}
    for block in blocks(REPO / "docs" / "websocket-protocol.md"):
        if block.code or not block.headings or block.headings[-1] != heading or not block.text.startswith("| `type`"):
            continue
        for line in block.text.splitlines():
            cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
            kind = re.fullmatch(r"`(\w+)`", cells[0])
            if kind and kind.group(1) != "type":
                rows[kind.group(1)] = cells[1:]
    return rows


def reply_types() -> set[str]:
    """The ``type`` of every frame the WebSocket transport sends, read from its source."""
    source = Path(websocket.__file__).read_text(encoding="utf-8")
    return set(re.findall(r'\{"type": "(\w+)"', source))


# -- tests ---------------------------------------------------------------------------------------------------------
def test_the_docs_hold_command_lines_and_flags() -> None:
    """The readers below find what they check (a reader that found nothing would pass anything)."""
    lines = list(command_lines())
    assert len(lines) > 100
    assert {program for _, program, _ in lines} >= {"antiphon", "antiphon-edge"}
    assert len(list(prose_flags())) > 300
    assert len(websocket_table("Client to server")) == len(websocket.REQUEST_FIELDS)


def test_a_made_up_flag_is_caught() -> None:
    """A flag or a subcommand that does not exist is reported, naming the command it is not of."""
    assert command_problems("antiphon", ["serve", "--grace-s", "5", "--no-such-flag"]) == [
        "--no-such-flag is not a flag of antiphon serve"
    ]
    assert command_problems("antiphon", ["train", "nonesuch", "--steps", "1"]) == [
        "'nonesuch' is not a subcommand of antiphon train"
    ]
    assert command_problems("antiphon", ["train", "FAMILY", "--dry-run"]) == []
    assert command_problems("antiphon", ["eval", "vae|rbm", "--ais-runs", "1"]) == [
        "--ais-runs is not a flag of antiphon eval vae"
    ]
    assert command_problems("antiphon-edge", ["chat", "--server", "grpc://h:1", "--speek"]) == [
        "--speek is not a flag of antiphon-edge chat"
    ]


def test_command_lines_name_real_subcommands_and_flags() -> None:
    """Every ``antiphon``/``antiphon-edge`` command line in the docs names existing subcommands and their flags."""
    problems = [
        f"{block.where}: {problem}: {' '.join([program, *arguments])}"
        for block, program, arguments in command_lines()
        for problem in command_problems(program, arguments)
    ]
    assert not problems, "\n".join(problems)


def test_flags_in_the_prose_are_flags_of_the_section_command() -> None:
    """A flag the prose names is a flag of one of the commands its section is about (:data:`CONTEXTS`)."""
    problems = []
    for block, flag in prose_flags():
        if (block.doc, flag) in OTHER_FLAGS:
            continue
        patterns = context(block)
        if patterns is None:
            problems.append(f"{block.where}: {flag}: no command given for this section in CONTEXTS")
            continue
        commands = commands_matching(patterns)
        if not any(flag in flags_of(command) for command in commands):
            problems.append(f"{block.where}: {flag} is not a flag of {' or '.join(patterns)}")
    assert not problems, "\n".join(problems)


def test_contexts_name_existing_commands_and_headings() -> None:
    """Every entry of CONTEXTS matches a command, and every heading it names is one of its document."""
    for doc, table in CONTEXTS.items():
        path = REPO / doc if doc == "README.md" else REPO / "docs" / doc
        headings = {h for block in blocks(path) for h in block.headings}
        for heading, patterns in table.items():
            assert heading is None or heading in headings, (doc, heading)
            for pattern in patterns:
                assert commands_matching((pattern,)), (doc, pattern)


def test_environment_variables_are_settings_or_read_elsewhere() -> None:
    """Every ``ANTIPHON_*`` variable named is a setting of serve or one of the variables antiphon reads elsewhere
    (``server.settings.OTHER_VARIABLES``); a name with ``*`` matches at least one of them."""
    known = {settings.env_name(f.name) for f in fields(settings.ServeSettings)} | settings.OTHER_VARIABLES
    problems = [
        f"{block.where}: {name}"
        for block, name in documented_variables()
        if name not in OTHER_VARIABLES and not fnmatch.filter(known, name)
    ]
    assert not problems, "\n".join(problems)


def test_http_paths_are_routes_of_the_app() -> None:
    """Every ``/v1/...`` path the docs name is a route of the HTTP app, for the method named with it."""
    problems = []
    for block in all_blocks():
        for method, path in PATH.findall(block.text):
            if path in NOT_ROUTES:
                continue
            concrete = re.sub(r"\{[^}]*\}", "x", path)
            served = [methods for pattern, methods in routes() if pattern.match(concrete)]
            if not served:
                problems.append(f"{block.where}: {path} is not a route")
            elif method and not any(method in methods for methods in served):
                problems.append(f"{block.where}: {method} {path} is not served (only {sorted(set().union(*served))})")
    assert not problems, "\n".join(problems)


def test_websocket_request_types_are_the_protocols() -> None:
    """The "Client to server" table lists exactly the request types the transport reads."""
    assert set(websocket_table("Client to server")) == set(websocket.REQUEST_FIELDS)


@pytest.mark.parametrize("kind", sorted(websocket.REQUEST_FIELDS))
def test_websocket_request_fields_are_the_protocols(kind: str) -> None:
    """A request's row names (in code, as bare names) each of its fields and nothing else but ``sampling``'s."""
    named = set(re.findall(r"`(\w+)`", websocket_table("Client to server")[kind][0]))
    assert websocket.REQUEST_FIELDS[kind] - {"type"} - named == set()
    assert named - websocket.REQUEST_FIELDS[kind] - set(websocket.SAMPLING_FIELDS) == set()


def test_websocket_sampling_and_image_fields_are_the_protocols() -> None:
    """The ``sampling`` table lists exactly its fields, the image table exactly ``generate_image``'s own."""
    tables: dict[str, set[str]] = {}
    for block in blocks(REPO / "docs" / "websocket-protocol.md"):
        if not block.code and block.text.startswith("| field |"):
            tables[block.headings[-1]] = set(re.findall(r"\| `(\w+)` \|", block.text))
    assert tables["Client to server"] == set(websocket.SAMPLING_FIELDS)
    assert tables["Images"] == websocket.REQUEST_FIELDS["generate_image"] - {"type", "id", "model"}


def test_websocket_reply_types_are_the_protocols() -> None:
    """The "Server to client" table lists exactly the frame types the transport sends."""
    assert set(websocket_table("Server to client")) == reply_types()


def test_every_route_is_in_the_http_docs() -> None:
    """Every ``/v1`` route of the app, with each of its methods, is named in docs/http-api.md."""
    text = " ".join(block.text for block in blocks(REPO / "docs" / "http-api.md"))
    named = [(method, re.sub(r"\{[^}]*\}", "x", path)) for method, path in PATH.findall(text)]
    named += [("GET", path) for method, path in named if method == "DELETE"]  # "`GET`/`DELETE /v1/...`"
    missing = [
        f"{method} {pattern.pattern}"
        for pattern, methods in routes()
        if pattern.pattern.startswith("^/v1")
        for method in sorted(methods - {"HEAD"})
        if not any(m == method and pattern.match(path) for m, path in named)
    ]
    assert not missing, "\n".join(missing)


def test_the_bounds_table_is_the_settings() -> None:
    """operations.md's table of upper bounds gives each bounded setting of serve, with its bound."""
    bounds: dict[str, int] = {}
    for block in blocks(REPO / "docs" / "operations.md"):
        if block.headings[-1:] == ("Settings: bounds and stray variables",) and block.text.startswith("| option"):
            for line in block.text.splitlines()[2:]:
                names, most = line.strip("| ").split(" | ")
                for flag in re.findall(r"`(--[\w-]+)`", names):
                    bounds[flag] = int(re.match(r"[\d,]+", most).group().replace(",", ""))  # type: ignore[union-attr]
    settings_bounds = {
        settings.flag_name(f.name): f.metadata["most"]
        for f in fields(settings.ServeSettings)
        if f.metadata["most"] is not None
    }
    assert bounds == settings_bounds


def anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def sections(path: Path) -> set[str]:
    return {anchor(heading) for block in blocks(path) for heading in block.headings}


def test_linked_pages_and_sections_exist() -> None:
    """Every link to a file of the repository, its ``#section`` included, and every ``*.md`` named in code, exists."""
    problems = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"\w+:", target):  # https:, mailto:
                continue
            name, _, section = target.partition("#")
            linked = path.parent / name if name else path
            if not linked.exists():
                problems.append(f"{path.name}: {target}: no such file")
            elif section and linked.suffix == ".md" and section not in sections(linked):
                problems.append(f"{path.name}: {target}: no such section")
        for name in re.findall(r"`((?:[\w.-]+/)*[\w.-]+\.md)`", text):
            if not (REPO / name).exists() and not (path.parent / name).exists():
                problems.append(f"{path.name}: {name}: no such file")
    assert not problems, "\n".join(problems)
