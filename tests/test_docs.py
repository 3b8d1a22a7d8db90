"""The README stays short and points only at pages that exist; the generated reference pages
cover every command and every route. The strict site build itself runs in `make docs`, which
`make test` (CI) runs before the suite; `test_strict_build` repeats it when asked
(JAFFNET_DOCS_BUILD=1), e.g. where pytest runs without make."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_README_LINES = 200
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _reference_hook():
    spec = importlib.util.spec_from_file_location("docs_reference_hook", ROOT / "docs" / "hooks" / "reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


def test_readme_keeps_the_two_newcomer_commands_at_the_top():
    head = "\n".join(README.read_text(encoding="utf-8").splitlines()[:25])
    assert "make demo" in head and "make test" in head


def test_readme_links_only_to_existing_files():
    text = README.read_text(encoding="utf-8")
    targets = [target for target in LINK.findall(text) if not re.match(r"[a-z]+:", target)]
    assert targets, "README links to no docs page"
    missing = [target for target in targets
               if not target.startswith("#") and not (ROOT / target.split("#", 1)[0]).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"
    docs_links = [target for target in targets if target.startswith("docs/")]
    assert all(target.split("#", 1)[0].endswith(".md") for target in docs_links)


def test_every_docs_page_is_in_the_nav():
    """mkdocs --strict (omitted_files: warn) enforces this too; this says which page, without a build."""
    nav_text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8").split("\nnav:", 1)[1]
    in_nav = set(re.findall(r"([\w./-]+\.md)", nav_text))
    pages = {path.relative_to(ROOT / "docs").as_posix() for path in (ROOT / "docs").rglob("*.md")}
    generated = {"reference/cli.md", "reference/rest.md"}
    assert not pages & generated, "the reference pages are generated at build time: do not commit them"
    assert pages <= in_nav, f"pages missing from mkdocs.yml's nav: {sorted(pages - in_nav)}"
    assert in_nav - pages == generated


def test_cli_reference_covers_every_command():
    from cli.main import build_parser

    page = _reference_hook().cli_markdown()
    parser = build_parser()
    names = [action for action in parser._actions if action.__class__.__name__ == "_SubParsersAction"][0].choices
    for name in names:
        assert f"## jaffnet {name} " in page, name
    assert "## jaffnet bench model " in page and "usage: jaffnet train" in page


def test_rest_reference_covers_every_route():
    hook = _reference_hook()
    schema = hook.openapi_schema()
    page = hook.rest_markdown(schema)
    for path, item in schema["paths"].items():
        for method in item:
            assert f"## {method.upper()} `{path}`" in page, (method, path)
    for method, path in hook.route_rules():
        assert f"`{path}`" in page, (method, path)
    assert "[InspectionReply](#schema-inspectionreply)" in page
    assert "### InspectionReply {#schema-inspectionreply}" in page


@pytest.mark.skipif(os.environ.get("JAFFNET_DOCS_BUILD") != "1",
                    reason="make docs runs the strict build (set JAFFNET_DOCS_BUILD=1 to run it here)")
def test_strict_build(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "reference" / "cli" / "index.html").exists()
    assert (tmp_path / "reference" / "rest" / "index.html").exists()
