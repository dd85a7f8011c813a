"""Plain-text tables the eval commands print: columns padded to their widest cell, a dashed rule under the header."""

from __future__ import annotations


def aligned(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    """The first ``left`` columns left-aligned (names), the rest right-aligned (numbers); two spaces between."""
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])
