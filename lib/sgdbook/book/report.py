"""The scorecard and status tables of the rendered book, built from the ledger and status records."""

from __future__ import annotations

import json
import re
from collections import Counter

import yaml

from .ledger import VERDICTS, format_evidence, load_claims, papers, read_records
from .paths import build_dir, papers_dir

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>|$#])")


def md_escape(text: str) -> str:
    """Escape Markdown/MyST punctuation (``$`` too: the book renders dollar math)."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def _title(paper: str) -> str:
    doc = yaml.safe_load((papers_dir() / paper / "claims.yaml").read_text())
    return doc.get("title", paper)


def scorecard_markdown(scale: str) -> str:
    records = read_records(scale)
    by_key = {(r["paper"], r["id"]): r for r in records}
    lines = []
    total = Counter()
    per_paper = []
    for paper in papers():
        claims = load_claims(paper)
        counts = Counter(by_key[(paper, i)]["verdict"] if (paper, i) in by_key else "not yet covered" for i in claims)
        total.update(counts)
        per_paper.append((paper, claims, counts))
    lines.append(f"Scale of the records on this page: **{scale}**. " f"{len(records)} records from the executed notebooks.")
    lines.append("")
    lines.append("| paper | items | " + " | ".join(VERDICTS) + " | not yet covered |")
    lines.append("|---|---|" + "---|" * (len(VERDICTS) + 1))
    for paper, claims, counts in per_paper:
        cells = [str(counts.get(v, 0)) for v in (*VERDICTS, "not yet covered")]
        lines.append(f"| [{paper}](#{paper}) | {len(claims)} | " + " | ".join(cells) + " |")
    cells = [str(total.get(v, 0)) for v in (*VERDICTS, "not yet covered")]
    lines.append(f"| **all** | {sum(total.values())} | " + " | ".join(cells) + " |")
    for paper, claims, counts in per_paper:
        lines += ["", f"({paper})=", f"## {md_escape(_title(paper))}", ""]
        lines.append(f"Slug `{paper}`: " + ", ".join(f"{v} {counts[v]}" for v in (*VERDICTS, "not yet covered") if counts.get(v)) + ".")
        lines += ["", "| id | kind | section | claim | verdict | evidence | notebook |", "|---|---|---|---|---|---|---|"]
        for item_id, item in claims.items():
            rec = by_key.get((paper, item_id))
            if rec is None:
                verdict, evidence, nb = "*not yet covered*", "", ""
            else:
                verdict = f"**{rec['verdict']}**"
                evidence = md_escape(format_evidence(rec["evidence"], digits=4)) + "<br>" if rec["evidence"] else ""
                evidence += "*criterion:* " + md_escape(rec["criterion"])
                nb = md_escape(rec["notebook"])
            lines.append(
                f"| `{item_id}` | {item['kind']} | {md_escape(item['section'])} | {md_escape(item['summary'])} "
                f"| {verdict} | {evidence} | {nb} |"
            )
    return "\n".join(lines) + "\n"


def read_status(scale: str) -> list[dict]:
    folder = build_dir() / "status" / scale
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def status_markdown(scale: str) -> str:
    rows = read_status(scale)
    lines = [
        f"Scale: **{scale}**. {len(rows)} notebooks executed with papermill; "
        f"{sum(r['ok'] for r in rows)} ran cleanly.",
        "",
        "| paper | notebook | scale | device | wall time (s) | result | finished |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        result = "ran cleanly" if r["ok"] else "**failed**: " + md_escape(r["error"][:200])
        lines.append(
            f"| {r['paper']} | {md_escape(r['notebook'])} | {r['scale']} | {r['device']} | "
            f"{r['seconds']:.1f} | {result} | {r['finished']} |"
        )
    return "\n".join(lines) + "\n"
