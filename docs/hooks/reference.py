"""MkDocs hook: the CLI and REST reference pages, generated from the code at every build.

* ``reference/cli.md`` walks the real argparse parser (``cli.main.build_parser()``), every
  subcommand and ``bench`` target, and prints each one's ``--help``.
* ``reference/rest.md`` (and ``reference/openapi.json``) come from the FastAPI app's OpenAPI
  schema (``serving.api.api.openapi()``: importing the module defines the app; nothing starts
  Ray or Serve), with the access layer's route table (``serving.access.ROUTES``) beside it.

Nothing is written into ``docs/``: the pages exist only in the build, so they cannot go stale.
``mkdocs.yml`` lists this file under ``hooks:``; ``tests/test_docs.py`` calls the two page
builders directly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository (docs/hooks/reference.py)

CLI_PAGE = "reference/cli.md"
REST_PAGE = "reference/rest.md"
OPENAPI_FILE = "reference/openapi.json"
HELP_COLUMNS = "100"  # argparse wraps --help to $COLUMNS: fixed, so the page does not depend on the terminal

HTTP_METHODS = ("get", "post", "put", "patch", "delete", "head", "options")


def _import_path() -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


# -- CLI -------------------------------------------------------------------------------------------

def _subcommands(parser: argparse.ArgumentParser, prefix: str) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """``(full name, one-line help, parser)`` for every subcommand under ``parser``, depth first."""
    found = []
    for action in parser._actions:  # argparse keeps subparsers only here
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
        for name, sub in action.choices.items():
            full = f"{prefix} {name}"
            found.append((full, helps.get(name, ""), sub))
            found.extend(_subcommands(sub, full))
    return found


def _anchor(name: str) -> str:
    return name.replace(" ", "-").lower()


def cli_markdown() -> str:
    """The CLI reference page: a summary table, then every command's own ``--help``."""
    _import_path()
    from cli.main import build_parser

    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_COLUMNS
    try:
        parser = build_parser()
        commands = _subcommands(parser, parser.prog)
        top_help = parser.format_help()
        helps = {name: sub.format_help() for name, _, sub in commands}
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous

    lines = [
        "# CLI reference",
        "",
        "Generated at build time from the real parser (`cli.main.build_parser()`: the `add_commands` of",
        "every module `cli/main.py` lists): each section is that command's `--help`, so this page cannot",
        "disagree with the installed `jaffnet`. The guides explain when to use what.",
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    for name, help_text, _ in commands:
        lines.append(f"| [`{name}`](#{_anchor(name)}) | {_cell(help_text)} |")
    lines += ["", f"## {parser.prog} {{#{_anchor(parser.prog)}}}", "", "```text", top_help.rstrip(), "```", ""]
    for name, help_text, _ in commands:
        lines += [f"## {name} {{#{_anchor(name)}}}", ""]
        if help_text:
            lines += [help_text[0].upper() + help_text[1:] + ("" if help_text.endswith(".") else "."), ""]
        lines += ["```text", helps[name].rstrip(), "```", ""]
    return "\n".join(lines)


# -- REST ------------------------------------------------------------------------------------------

def openapi_schema() -> dict:
    """The inspection service's OpenAPI schema, from the FastAPI app object (no Ray, no Serve)."""
    _import_path()
    from serving.api import api

    return api.openapi()


def route_rules() -> dict[tuple[str, str], object]:
    _import_path()
    from serving.access import ROUTES

    return dict(ROUTES)


def _cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _schema_anchor(name: str) -> str:
    return "schema-" + name.lower()


def _type(schema: dict | None) -> str:
    """A short, linked type name for a schema fragment."""
    if not schema:
        return "any"
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{_schema_anchor(name)})"
    for combiner in ("anyOf", "oneOf", "allOf"):
        if combiner in schema:
            return " or ".join(_type(part) for part in schema[combiner])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_type(schema.get('items'))}"
    if kind == "object" and "additionalProperties" in schema and isinstance(schema["additionalProperties"], dict):
        return f"object of {_type(schema['additionalProperties'])}"
    if "enum" in schema:
        return f"{kind}: " + ", ".join(f"`{value}`" for value in schema["enum"])
    if "const" in schema:
        return f"`{schema['const']}`"
    fmt = schema.get("format")
    return f"{kind} ({fmt})" if fmt else str(kind)


def _limits(schema: dict) -> str:
    parts = []
    for key, symbol in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<"),
                        ("minLength", "length >="), ("maxLength", "length <="), ("pattern", "pattern")):
        if key in schema:
            parts.append(f"{symbol} `{schema[key]}`")
    for part in schema.get("anyOf", []):
        nested = _limits(part)
        if nested:
            parts.append(nested)
    return ", ".join(parts)


def _who(rule: object | None) -> str:
    if rule is None:
        return "not in the route table (unreachable)"
    roles = sorted(getattr(rule, "roles", ()))
    who = ", ".join(f"`{role}`" for role in roles) if roles else "public"
    if getattr(rule, "cookie", False):
        who += "; the operator page's session"
    if getattr(rule, "image_read", False):
        who += "; counts as an image read"
    return who


def rest_markdown(schema: dict | None = None, rules: dict | None = None) -> str:
    """The REST reference page: who may call what, then every operation and every schema."""
    schema = openapi_schema() if schema is None else schema
    rules = route_rules() if rules is None else rules
    info = schema.get("info", {})
    operations = [(path, method, spec) for path, item in schema.get("paths", {}).items()
                  for method, spec in item.items() if method in HTTP_METHODS]
    order = {route: index for index, route in enumerate(rules)}  # the route table's order: /v1/inspect early
    operations.sort(key=lambda op: order.get((op[1].upper(), op[0]), len(order)))
    documented = {(method.upper(), path) for path, method, _ in operations}

    lines = [
        "# REST reference",
        "",
        f"Generated at build time from the service's OpenAPI schema ({info.get('title', '')}, "
        f"OpenAPI {schema.get('openapi', '?')}): `serving.api.api.openapi()`, the same schema a running",
        "service serves at `/openapi.json` and renders at `/docs` (both behind a key when keys are on).",
        f"The schema itself: [openapi.json](openapi.json). {_cell(info.get('description', ''))}",
        "",
        "The \"who may call it\" column is the access layer's route table (`serving.access.ROUTES`);",
        "roles, keys and sessions are explained in [Security](../security.md). Every error body is",
        "`{\"request_id\", \"error\": {\"code\", \"message\"}}`.",
        "",
        "## Operations",
        "",
        "| method | path | summary | who may call it |",
        "|---|---|---|---|",
    ]
    for path, method, spec in operations:
        anchor = _operation_anchor(method, path)
        lines.append(f"| {method.upper()} | [`{path}`](#{anchor}) | {_cell(spec.get('summary', ''))} | "
                     f"{_cell(_who(rules.get((method.upper(), path))))} |")
    lines += ["", "Routes outside the schema (the operator page and its sign-in, static files, the schema pages):", "",
              "| method | path | who may call it |", "|---|---|---|"]
    for (method, path), rule in rules.items():
        if (method, path) not in documented:
            lines.append(f"| {method} | `{path}` | {_cell(_who(rule))} |")
    lines.append("")

    for path, method, spec in operations:
        lines += _operation(path, method, spec, rules.get((method.upper(), path)))

    components = schema.get("components", {}).get("schemas", {})
    if components:
        lines += ["## Schemas", ""]
        for name, component in components.items():
            lines += _component(name, component)
    return "\n".join(lines)


def _operation_anchor(method: str, path: str) -> str:
    slug = "".join(ch if ch.isalnum() else "-" for ch in path.lower()).strip("-")
    return f"{method.lower()}-{slug}" if slug else f"{method.lower()}-root"


def _operation(path: str, method: str, spec: dict, rule: object | None) -> list[str]:
    lines = [f"## {method.upper()} `{path}` {{#{_operation_anchor(method, path)}}}", ""]
    if spec.get("summary"):
        lines += [f"**{spec['summary']}**", ""]
    if spec.get("description"):
        lines += [spec["description"].strip(), ""]
    lines += [f"Who may call it: {_who(rule)}.", ""]
    parameters = spec.get("parameters", [])
    if parameters:
        lines += ["| parameter | in | type | required | default | limits | description |",
                  "|---|---|---|---|---|---|---|"]
        for parameter in parameters:
            pschema = parameter.get("schema", {})
            default = f"`{json.dumps(pschema['default'])}`" if "default" in pschema else ""
            lines.append(f"| `{parameter['name']}` | {parameter.get('in', '')} | {_cell(_type(pschema))} | "
                         f"{'yes' if parameter.get('required') else 'no'} | {_cell(default)} | "
                         f"{_cell(_limits(pschema))} | "
                         f"{_cell(parameter.get('description', pschema.get('description', '')))} |")
        lines.append("")
    body = spec.get("requestBody")
    if not body and method.lower() in ("post", "put", "patch"):
        lines += ["Request body: not described by the schema (the route reads the raw request body itself); "
                  "see the [Serving guide](../guides/serving.md#the-api).", ""]
    if body:
        lines += ["Request body" + (" (required)" if body.get("required") else "") + ":", ""]
        if body.get("description"):
            lines += [body["description"].strip(), ""]
        for content_type, content in body.get("content", {}).items():
            lines.append(f"- `{content_type}`: {_type(content.get('schema'))}")
        lines.append("")
    responses = spec.get("responses", {})
    if responses:
        lines += ["| status | description | body |", "|---|---|---|"]
        for status, response in responses.items():
            contents = response.get("content", {})
            bodies = "; ".join(f"`{content_type}` {_type(content.get('schema'))}".strip()
                               for content_type, content in contents.items())
            headers = ", ".join(f"`{name}`" for name in response.get("headers", {}))
            if headers:
                bodies += f" (headers: {headers})"
            lines.append(f"| {status} | {_cell(response.get('description', ''))} | {_cell(bodies)} |")
        lines.append("")
    return lines


def _component(name: str, component: dict) -> list[str]:
    lines = [f"### {name} {{#{_schema_anchor(name)}}}", ""]
    if component.get("description"):
        lines += [" ".join(component["description"].split()), ""]
    properties = component.get("properties")
    if properties:
        required = set(component.get("required", []))
        lines += ["| field | type | required | default | description |", "|---|---|---|---|---|"]
        for field, fschema in properties.items():
            default = f"`{json.dumps(fschema['default'])}`" if "default" in fschema else ""
            lines.append(f"| `{field}` | {_cell(_type(fschema))} | {'yes' if field in required else 'no'} | "
                         f"{_cell(default)} | {_cell(fschema.get('description', ''))} |")
        lines.append("")
    elif "enum" in component or "type" in component:
        lines += [f"Type: {_type(component)}", ""]
    return lines


# -- the MkDocs hook -------------------------------------------------------------------------------

def on_files(files, config):
    """Add the generated pages (and the schema) to the build; they are never files in docs/."""
    from mkdocs.structure.files import File

    schema = openapi_schema()
    for path, content in ((CLI_PAGE, cli_markdown()), (REST_PAGE, rest_markdown(schema)),
                          (OPENAPI_FILE, json.dumps(schema, indent=2) + "\n")):
        existing = files.get_file_from_path(path)
        if existing is not None:  # a hand-written copy would silently win: refuse it
            raise SystemExit(f"docs/{path} must not exist: the build generates it (docs/hooks/reference.py)")
        files.append(File.generated(config, path, content=content))
    return files
