"""The document model of reports: headings, paragraphs, tables, code and images as plain data.

Report sections (:mod:`robustsnn.analysis.sections`, :mod:`robustsnn.analysis.breaks`,
:mod:`robustsnn.analysis.compare`) build lists of these blocks; :mod:`robustsnn.analysis.render`
turns one list into markdown or HTML. The blocks know nothing of either format and this module
imports nothing of the package, so every module that builds a part of a document can depend on
it without depending on the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Cell:
    """A table cell; ``style`` ("pass" / "fail") marks a verdict."""

    text: str
    style: str | None = None


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Paragraph:
    text: str
    style: str | None = None


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Cell | str]]
    source: str


@dataclass
class Code:
    text: str
    source: str


@dataclass
class Image:
    path: Path
    caption: str


Block = Heading | Paragraph | Table | Code | Image

__all__ = ["Block", "Cell", "Code", "Heading", "Image", "Paragraph", "Table"]
