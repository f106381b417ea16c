"""The several-processes benchmark writes its own section of docs/benchmarks.md and keeps the rest."""

from __future__ import annotations

from pathlib import Path

from benchmarks.scale import SECTION_END, SECTION_START, kept_section, write_section


def test_the_section_is_added_then_replaced_and_the_rest_kept(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\ntables of the other benchmark\n", encoding="utf-8")
    first = f"{SECTION_START}\nfirst run\n{SECTION_END}"
    write_section(doc, first)
    assert kept_section(doc) == first
    second = f"{SECTION_START}\nsecond run\n{SECTION_END}"
    write_section(doc, second)
    text = doc.read_text(encoding="utf-8")
    assert text == f"# Benchmarks\n\ntables of the other benchmark\n\n{second}\n"
    assert kept_section(tmp_path / "missing.md") == ""
