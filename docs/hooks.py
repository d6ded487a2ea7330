"""mkdocs hook: the CLI reference page is the parser's own ``--help`` text, so it cannot drift.

``reference/cli.md`` holds the marker ``<!-- sisa-cli-help -->``; this hook replaces it with
one section per subcommand, formatted by argparse at build time.
"""

from __future__ import annotations

import argparse

MARKER = "<!-- sisa-cli-help -->"


def _sections() -> str:
    from sisa.cli.parser import build_parser

    parser = build_parser()
    out = [f"```text\n{parser.format_help()}```"]
    for action in parser._actions:  # argparse keeps subparsers only here
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.append(f"## `sisa {name}`\n\n```text\n{sub.format_help()}```")
    return "\n\n".join(out)


def on_page_markdown(markdown: str, page, config, files) -> str:
    return markdown.replace(MARKER, _sections()) if MARKER in markdown else markdown
