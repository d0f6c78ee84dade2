"""What the reader's page is made of: the executed notebooks and pages as the staging step
(``pipeline.stage``) turns them into the book's sources.

- :func:`merge_parameters`: papermill's injected-parameters cell is folded into the notebook's
  own ``parameters`` cell (the values that ran, with the source's values in a comment), so the
  page shows one parameters cell and it tells the truth;
- :func:`strip_progress`: progress-bar text (tqdm's lines in stderr, progress widgets) is taken
  out of the outputs; it belongs to interactive runs (the pipeline also turns the bars off);
- :func:`add_page_info`: a line under the chapter's opening (where it ran, notation, scorecard,
  status) and a closing section (how to rerun it; the executed notebook and its ledger records
  for download);
- :func:`stub_notebook`: a page for a chapter not executed at this scale (``make chapter`` builds a
  book in which only some chapters ran);
- :func:`insert_after_title`: the generated summary of a paper's verdicts under the title of its
  index page.

Functions of notebook dictionaries (nbformat 4 JSON), without side effects.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Mapping

#: tqdm's text bar: "desc:  40%|####      | 4/10 [00:01<00:02,  2.9it/s]" (and its ASCII form).
PROGRESS_LINE = re.compile(r"\d+%\|.*\|\s*\d+(?:\.\d+)?[kMG]?/\d+(?:\.\d+)?[kMG]?\b|\[\d\d:\d\d<[^\]]*\]|\d(?:it/s|s/it)\]")
_ASSIGN = re.compile(r"^(?P<indent>\s*)(?P<name>[A-Za-z_]\w*)(?P<eq>\s*=\s*)(?P<value>.*?)(?P<comment>\s+#.*)?$")
_WIDGET = "application/vnd.jupyter.widget-view+json"


def _tags(cell: Mapping[str, Any]) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _source(cell: Mapping[str, Any]) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _assignments(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        m = _ASSIGN.match(line)
        if m and not m["indent"]:
            out[m["name"]] = m["value"].strip()
    return out


def merge_parameters(nb: dict) -> dict:
    """One parameters cell with the values that ran; the injected cell removed."""
    nb = copy.deepcopy(nb)
    cells = nb.get("cells", [])
    injected = [c for c in cells if "injected-parameters" in _tags(c)]
    if not injected:
        return nb
    values: dict[str, str] = {}
    for c in injected:
        values.update(_assignments(_source(c)))
    values.pop("sgdbook_notebook", None)  # the pipeline's note to the chapter object, not a setting
    params = next((c for c in cells if "parameters" in _tags(c)), None)
    if params is None:
        # no parameters cell of its own: keep the injected one as the parameters cell
        keep = injected[0]
        keep["metadata"]["tags"] = [t for t in _tags(keep) if t != "injected-parameters"] + ["parameters"]
        keep["source"] = "\n".join(line for line in _source(keep).splitlines() if line.strip() != "# Parameters")
        nb["cells"] = [c for c in cells if c is keep or all(c is not i for i in injected)]
        return nb
    seen, lines = set(), []
    for line in _source(params).splitlines():
        m = _ASSIGN.match(line)
        if m and not m["indent"] and m["name"] in values:
            name, new = m["name"], values[m["name"]]
            seen.add(name)
            if new != m["value"].strip():
                line = f"{name}{m['eq']}{new}  # this run's value (the notebook's default: {m['value'].strip()})"
        lines.append(line)
    for name, value in values.items():  # parameters the source cell does not set
        if name not in seen:
            lines.append(f"{name} = {value}  # set by this run")
    params["source"] = "\n".join(lines)
    nb["cells"] = [c for c in cells if all(c is not i for i in injected)]
    return nb


def _strip_text(text: str) -> str:
    kept = []
    for line in text.split("\n"):
        parts = [p for p in line.split("\r") if p.strip() and not PROGRESS_LINE.search(p)]
        if parts or not line.strip():
            kept.append(parts[-1] if parts else "")
    out = "\n".join(kept)
    return out if out.strip() else ""


def strip_progress(nb: dict) -> dict:
    """Outputs without progress bars: tqdm's text lines and progress widgets removed."""
    nb = copy.deepcopy(nb)
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        outputs = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                text = _strip_text("".join(out["text"]) if isinstance(out["text"], list) else out["text"])
                if not text:
                    continue
                out = {**out, "text": text}
            elif out.get("output_type") in ("display_data", "execute_result") and _WIDGET in out.get("data", {}):
                plain = "".join(out["data"].get("text/plain", ""))
                if not out["data"].keys() - {_WIDGET, "text/plain"} and (not plain.strip() or PROGRESS_LINE.search(plain)):
                    continue
                out = {**out, "data": {k: v for k, v in out["data"].items() if k != _WIDGET}}
            outputs.append(out)
        cell["outputs"] = outputs
    return nb


def fmt_seconds(s: float) -> str:
    s = float(s)
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _md_cell(nb: Mapping[str, Any], text: str, tag: str) -> dict:
    cell = {"cell_type": "markdown", "metadata": {"tags": [tag]}, "source": text}
    if (nb.get("nbformat", 4), nb.get("nbformat_minor", 0)) >= (4, 5):  # cell ids exist from 4.5 on
        cell["id"] = tag
    return cell


def add_page_info(
    nb: dict,
    *,
    folder: str,
    stem: str,
    scale: str,
    status: Mapping[str, Any] | None,
    is_paper: bool,
    notebook_download: str,
    ledger_download: str | None,
) -> dict:
    """The chapter's opening line (run, notation, scorecard, status) and closing rerun section."""
    nb = copy.deepcopy(nb)
    cells = nb.get("cells", [])
    ran = ""
    if status:
        ran = f"Ran at scale <b>{scale}</b> on {status.get('device', '?')} in {fmt_seconds(status.get('seconds', 0))}"
    notation = f"../notation.html#notation-{folder}" if is_paper else "../notation.html"
    links = [
        f'{ran} (<a href="../status.html#status-{folder}-{stem}">status</a>)' if ran else "",
        f'<a href="{notation}">notation</a>',
        f'<a href="../scorecard.html#scorecard-{folder}">verdicts on the scorecard</a>' if is_paper else "",
        '<a href="#sgdbook-rerun-this">rerun or download</a>',
    ]
    info = '<p class="sgdbook-pageinfo">' + " · ".join(link for link in links if link) + "</p>"
    first_md = next((i for i, c in enumerate(cells) if c.get("cell_type") == "markdown"), -1)
    cells.insert(first_md + 1, _md_cell(nb, info, "sgdbook-pageinfo"))
    nb_path = f"book/{folder}/{stem}.ipynb"
    downloads = f"{{download}}`the executed notebook <{notebook_download}>`"
    if ledger_download:
        downloads += f" · {{download}}`its ledger records (JSON) <{ledger_download}>`"
    when = ""
    if status:
        when = (
            f"This page shows the run at scale **{scale}** on **{status.get('device', '?')}**, "
            f"{fmt_seconds(status.get('seconds', 0))} of wall time, finished {status.get('finished', '?')}. "
        )
    closing = f"""(sgdbook-rerun-{folder}-{stem})=
## Rerunning this chapter

<a id="sgdbook-rerun-this"></a>{when}To run it again at another scale or on another device and rebuild only this page:

```text
make chapter NB={nb_path} SCALE=book DEVICE=auto
```

`SCALE` is `smoke`, `book` or `paper` and `DEVICE` is `auto`, `cpu` or `cuda`; the time each
scale took on this machine is in the {{ref}}`reading guide <sgdbook-rerun>`. `make jupyter`
opens the notebook in Jupyter with the project's kernel.

Download: {downloads}.
"""
    cells.append(_md_cell(nb, closing, "sgdbook-rerun"))
    nb["cells"] = cells
    return nb


def stub_notebook(title: str, folder: str, stem: str, scale: str) -> dict:
    """A notebook page (so that links to the chapter still resolve) for a chapter that has not
    been executed at ``scale`` on this machine."""
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "cells": [_md_cell({"nbformat": 4, "nbformat_minor": 5}, stub_page(title, folder, stem, scale), "sgdbook-stub")],
    }


def stub_page(title: str, folder: str, stem: str, scale: str) -> str:
    """The text of the page for a chapter that has not been executed at ``scale`` on this machine."""
    return f"""# {title}

```{{admonition}} Not executed at scale {scale}
:class: warning
This chapter has not been executed at scale **{scale}** on this machine, so this book shows
no page for it. Run it with

    make chapter NB=book/{folder}/{stem}.ipynb SCALE={scale}
```
"""


def insert_after_title(text: str, block: str) -> str:
    """``block`` inserted after the first ``# `` heading of a Markdown page (at the top if none)."""
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith("# "):
            return "".join(lines[: i + 1]) + "\n" + block.rstrip("\n") + "\n\n" + "".join(lines[i + 1 :]).lstrip("\n")
    return block.rstrip("\n") + "\n\n" + text
