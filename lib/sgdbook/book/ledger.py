"""The claims ledger: one JSON record per claims.yaml item, written by the executed notebooks.

A notebook opens a :class:`Ledger` for its paper, records each item with a verdict computed
from measured numbers, and the records land in ``_build/ledger/<scale>/<paper>__<notebook>.json``
as a list of plain objects (``paper``, ``id``, ``verdict``, ``criterion``, ``evidence``,
``scale``, ``device``, ``seconds``, ``notebook``). The scorecard page and ``make test`` read
those files; nothing is typed into a page by hand.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import numbers
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from .paths import build_dir, papers_dir
from .scales import check_scale

VERDICTS: tuple[str, ...] = (
    "reproduced",
    "partially-reproduced",
    "not-reproduced",
    "erratum",
    "inconclusive",
    "not-run-at-this-scale",
)

#: What each verdict means (shown by the scorecard and the reading guide).
VERDICT_MEANING: dict[str, str] = {
    "reproduced": "the measurement agrees with the claim under the criterion fixed before the run",
    "partially-reproduced": "some parts of the criterion hold, others do not (the evidence says which)",
    "not-reproduced": "the measurement contradicts the claim with adequate power in the claim's own regime",
    "erratum": "the printed statement is wrong; the corrected statement is checked and shown",
    "inconclusive": "measured, but at this scale the measurement cannot decide (too little power, or the "
    "runs do not reach the claim's regime); the record says what would decide it",
    "not-run-at-this-scale": "not measured at this scale, for the reason given",
}

#: Verdicts that must say why (the paper, or this scale).
NEEDS_WHY = ("not-reproduced", "inconclusive", "not-run-at-this-scale", "erratum")
#: Enforced today (the others once every chapter states its reasons).
ENFORCED_WHY = ("inconclusive", "not-run-at-this-scale")

#: How a verdict was reached: a measurement judged against a criterion, an identity or bound
#: asserted at every scale (a failing assert stops the notebook), or a definition/illustration
#: implemented and shown (nothing that could fail).
BASES: tuple[str, ...] = ("measured", "exact", "illustration")


class LedgerError(ValueError):
    """A record that does not fit the claims checklist or the verdict vocabulary."""


def load_claims(paper: str) -> dict[str, dict[str, Any]]:
    """The items of ``papers/<paper>/claims.yaml`` keyed by id, in file order."""
    path = papers_dir() / paper / "claims.yaml"
    if not path.is_file():
        raise LedgerError(f"no claims checklist for paper {paper!r} at {path}")
    doc = yaml.safe_load(path.read_text())
    return {item["id"]: item for item in doc["items"]}


def papers() -> list[str]:
    """The paper slugs that have a claims.yaml."""
    return sorted(p.parent.name for p in papers_dir().glob("*/claims.yaml"))


def _plain(value: Any) -> Any:
    """Evidence as JSON-ready plain Python: numbers, strings, booleans, short lists."""
    if hasattr(value, "tolist"):  # numpy / torch scalars and arrays
        value = value.tolist()
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        v = float(value)
        return v if math.isfinite(v) else str(v)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    raise LedgerError(f"evidence value {value!r} of type {type(value).__name__} is not a number")


@dataclass
class Record:
    paper: str
    id: str
    verdict: str
    criterion: str
    evidence: dict[str, Any]
    scale: str
    device: str
    seconds: float
    notebook: str
    basis: str = "measured"
    why: str = ""
    decide: str = ""
    pilot: str = ""


class Ledger:
    """Records of one executed notebook.

    Parameters: the paper slug, the notebook's name (e.g. ``"01_kappa_bias"``), the scale and
    the device the notebook ran on. ``record`` checks the id and the verdict at once and
    rewrites the JSON file, so a notebook that stops half-way still leaves what it recorded.
    """

    def __init__(self, paper: str, notebook: str, scale: str, device: Any) -> None:
        self.paper = paper
        self.notebook = notebook
        self.scale = check_scale(scale)
        self.device = str(device)
        self.claims = load_claims(paper)
        self.records: dict[str, Record] = {}
        self._start = time.perf_counter()
        self.path = build_dir() / "ledger" / self.scale / f"{paper}__{notebook}.json"

    def record(
        self,
        id: str,
        verdict: str,
        criterion: str,
        evidence: Mapping[str, Any],
        *,
        basis: str = "measured",
        why: str = "",
        decide: str = "",
        pilot: str = "",
    ) -> Record:
        """Record item ``id`` with ``verdict``, the ``criterion`` it was computed with and the
        measured ``evidence`` (name → number, string or short list).

        ``why`` (required for the verdicts in :data:`NEEDS_WHY`) says whether the paper or this
        scale is the reason; ``decide`` (required for ``inconclusive``) what would decide it;
        ``pilot`` a setting tried before the judged one and its outcome; ``basis`` is one of
        :data:`BASES`.
        """
        if id not in self.claims:
            raise LedgerError(f"{id!r} is not an item of {self.paper}/claims.yaml")
        if verdict not in VERDICTS:
            raise LedgerError(f"unknown verdict {verdict!r}: use one of {', '.join(VERDICTS)}")
        if not criterion.strip():
            raise LedgerError("a record needs the criterion its verdict was computed with")
        if basis not in BASES:
            raise LedgerError(f"unknown basis {basis!r}: use one of {', '.join(BASES)}")
        if verdict in ENFORCED_WHY and not why.strip():
            raise LedgerError(f"a {verdict!r} record needs `why` (the paper, or this scale, and how)")
        if verdict == "inconclusive" and not decide.strip():
            raise LedgerError("an 'inconclusive' record needs `decide`: what would decide it")
        rec = Record(
            paper=self.paper,
            id=id,
            verdict=verdict,
            criterion=criterion,
            evidence=_plain(dict(evidence)),
            scale=self.scale,
            device=self.device,
            seconds=round(time.perf_counter() - self._start, 3),
            notebook=self.notebook,
            basis=basis,
            why=why.strip(),
            decide=decide.strip(),
            pilot=pilot.strip(),
        )
        self.records[id] = rec
        self.save()
        return rec

    def save(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps([asdict(r) for r in self.records.values()], indent=1))
        os.replace(tmp, self.path)
        return self.path

    def box(self, id: str):
        """The verdict box of a recorded item, for display at the end of a chapter."""
        from IPython.display import HTML

        return HTML(verdict_box_html(self.records[id], self.claims[id]))


_BOX_CLASS = {
    "reproduced": "tip",
    "partially-reproduced": "warning",
    "not-reproduced": "danger",
    "erratum": "important",
    "inconclusive": "note",
    "not-run-at-this-scale": "note",
}


def format_evidence(evidence: Mapping[str, Any], digits: int = 4) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.{digits}g}"
        if isinstance(v, list):
            inner = ", ".join(fmt(x) for x in v[:8])
            return "[" + inner + (", …" if len(v) > 8 else "") + "]"
        return str(v)

    return "; ".join(f"{k} = {fmt(v)}" for k, v in evidence.items())


def verdict_box_html(rec: Record, claim: Mapping[str, Any]) -> str:
    """The HTML of one verdict box (an admonition coloured by the verdict)."""
    cls = _BOX_CLASS[rec.verdict]
    e = html.escape
    # the id is what the scorecard and the errata page link to (report.verdict_anchor)
    anchor = "verdict-" + re.sub(r"[^A-Za-z0-9_-]+", "-", rec.id).strip("-").lower()
    return (
        f'<div class="admonition {cls} sgdbook-verdict-box" id="{anchor}" data-verdict="{e(rec.verdict)}">'
        f'<p class="admonition-title">{e(rec.id)} ({e(claim["kind"])}, {e(str(claim["section"]))}):'
        f" {e(rec.verdict)} at scale {e(rec.scale)}</p>"
        f"<p><b>Claim.</b> {e(claim['summary'])}</p>"
        f"<p><b>Criterion.</b> {e(rec.criterion)}</p>"
        f"<p><b>Evidence.</b> {e(format_evidence(rec.evidence))}</p>"
        + (f"<p><b>Why.</b> {e(rec.why)}</p>" if rec.why else "")
        + (f"<p><b>What would decide it.</b> {e(rec.decide)}</p>" if rec.decide else "")
        + (f"<p><b>Pilot.</b> {e(rec.pilot)}</p>" if rec.pilot else "")
        + (f"<p><b>Basis.</b> {e(_BASIS_TEXT[rec.basis])}</p>" if rec.basis != "measured" else "")
        + "</div>"
    )


_BASIS_TEXT = {
    "exact": "an identity or bound asserted at every scale (the notebook stops if it fails)",
    "illustration": "a definition or illustration implemented and shown; nothing here could fail",
}


# --------------------------------------------------------------------------- reading back


def read_records(scale: str, root: Path | None = None) -> list[dict[str, Any]]:
    """All records written at ``scale`` (every JSON file of ``_build/ledger/<scale>``)."""
    folder = (root or build_dir()) / "ledger" / check_scale(scale)
    out: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.json")):
        for rec in json.loads(path.read_text()):
            rec["_file"] = path.name
            out.append(rec)
    return out


def validate(records: list[dict[str, Any]]) -> list[str]:
    """Problems with the records: unknown papers, ids or verdicts, missing fields, duplicates."""
    problems = []
    fields = {f for f, spec in Record.__dataclass_fields__.items() if spec.default is dataclasses.MISSING}
    claims = {p: load_claims(p) for p in papers()}
    seen: dict[tuple[str, str], str] = {}
    for rec in records:
        where = rec.get("_file", "?")
        missing = fields - set(rec)
        if missing:
            problems.append(f"{where}: record without {sorted(missing)}")
            continue
        if rec["paper"] not in claims:
            problems.append(f"{where}: unknown paper {rec['paper']!r}")
            continue
        if rec["id"] not in claims[rec["paper"]]:
            problems.append(f"{where}: {rec['id']!r} is not in {rec['paper']}/claims.yaml")
        if rec["verdict"] not in VERDICTS:
            problems.append(f"{where}: unknown verdict {rec['verdict']!r} for {rec['id']}")
        elif rec["verdict"] in ENFORCED_WHY and not str(rec.get("why", "")).strip():
            problems.append(f"{where}: {rec['id']} is {rec['verdict']!r} without saying why")
        if rec["verdict"] == "inconclusive" and not str(rec.get("decide", "")).strip():
            problems.append(f"{where}: {rec['id']} is inconclusive without saying what would decide it")
        key = (rec["paper"], rec["id"])
        if key in seen and seen[key] != where:
            problems.append(f"{where}: {rec['paper']}:{rec['id']} is also recorded by {seen[key]}")
        seen[key] = where
    return problems


def coverage(records: list[dict[str, Any]]) -> dict[str, tuple[int, int, list[str]]]:
    """Per paper: (items recorded, items in claims.yaml, ids not yet covered)."""
    out = {}
    for paper in papers():
        ids = list(load_claims(paper))
        done = {r["id"] for r in records if r.get("paper") == paper}
        missing = [i for i in ids if i not in done]
        out[paper] = (len(ids) - len(missing), len(ids), missing)
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Check the claims ledger of one scale.")
    ap.add_argument("--scale", required=True)
    args = ap.parse_args(argv)
    records = read_records(args.scale)
    problems = validate(records)
    print(f"ledger ({args.scale}): {len(records)} records")
    for paper, (done, total, missing) in coverage(records).items():
        print(f"  {paper}: {done}/{total} items recorded, {total - done} not yet covered")
    if not records:
        problems.append(f"no ledger records under {build_dir() / 'ledger' / args.scale}")
    for p in problems:
        print(f"ERROR: {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
