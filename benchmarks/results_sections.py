"""Several benchmark scripts share benchmarks/results/speed.json and speed.md: each owns one
key of the JSON object and one marked section of the Markdown file, and rewrites only those."""

from __future__ import annotations

import json
import re
from pathlib import Path


def merge_json(path: Path, key: str | None, value: dict) -> None:
    """Set ``key`` of the JSON object in ``path`` (``None``: merge ``value``'s keys at the top)."""
    record = json.loads(path.read_text()) if path.exists() else {}
    record.update(value if key is None else {key: value})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")


def merge_markdown(path: Path, key: str, lines: list[str]) -> None:
    """Replace the section marked ``key`` in ``path`` (append it when absent)."""
    begin, end = f"<!-- begin {key} -->", f"<!-- end {key} -->"
    section = "\n".join([begin, *lines, end])
    text = path.read_text() if path.exists() else ""
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = (text.rstrip("\n") + "\n\n" if text else "") + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
