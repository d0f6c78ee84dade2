"""The three scales every chapter runs at, and per-scale settings.

``smoke`` proves the code path in seconds (CI), ``book`` is the rendered book's scale
(minutes on a 2-core CPU), ``paper`` uses the paper's own settings (meant for one GPU).
A chapter keeps its settings as a :class:`ScaleTable` in ``sgdbook.configs`` so that
both the notebook (which shows the table) and the tests (which build every ``paper``
configuration) read the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

SCALES: tuple[str, ...] = ("smoke", "book", "paper")


class ScaleError(ValueError):
    """An unknown scale name."""


def check_scale(scale: str) -> str:
    """Return ``scale`` if it is valid, else raise a :class:`ScaleError` listing the valid ones."""
    if scale not in SCALES:
        raise ScaleError(f"unknown scale {scale!r}: valid scales are {', '.join(SCALES)}")
    return scale


@dataclass(frozen=True)
class ScaleTable:
    """Settings of one chapter at each scale, with a description of every setting.

    ``paper_value`` holds what the paper itself used, for the visible table (text, not
    used in computation).
    """

    settings: Mapping[str, Mapping[str, Any]]
    descriptions: Mapping[str, str]
    paper_value: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if tuple(self.settings) != SCALES:
            raise ValueError(f"a ScaleTable needs exactly the scales {SCALES}, in order")
        keys = set(self.descriptions)
        for scale, values in self.settings.items():
            if set(values) != keys:
                raise ValueError(
                    f"scale {scale!r} sets {sorted(values)} but the table describes {sorted(keys)}"
                )

    def __call__(self, scale: str) -> dict[str, Any]:
        """The settings at ``scale`` (a fresh dict)."""
        return dict(self.settings[check_scale(scale)])

    def rows(self) -> list[dict[str, Any]]:
        """One row per setting: its description, its value at each scale and in the paper."""
        out = []
        for key, text in self.descriptions.items():
            row = {"setting": key, "meaning": text}
            row.update({s: _fmt(self.settings[s][key]) for s in SCALES})
            row["in the paper"] = self.paper_value.get(key, "")
            out.append(row)
        return out

    def to_markdown(self, current: str | None = None) -> str:
        """A Markdown table of all scales; the column of ``current`` is marked."""
        head = ["setting", "meaning", *SCALES, "in the paper"]
        shown = [f"**{h}** (this run)" if h == current else h for h in head]
        lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(head)]
        for row in self.rows():
            lines.append("| " + " | ".join(str(row[h]).replace("|", "\\|") for h in head) + " |")
        return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000:
        return f"{value:,}"
    return str(value)
