"""Conventions of the repository: clean notebooks, parameters cells, the table of contents,
the environment files, the vendored checklists (the pipeline's bad-input behaviour: test_pipeline.py)."""

import json
import re
import tomllib

import pytest
import yaml

from sgdbook.book.paths import ROOT

NOTEBOOKS = sorted(p for p in (ROOT / "book").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def test_there_are_chapters():
    assert NOTEBOOKS


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_source_notebooks_have_no_outputs_and_a_parameters_cell(nb):
    cells = json.loads(nb.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), f"{nb} has outputs"
    first = code[0]
    assert "parameters" in first.get("metadata", {}).get("tags", []), "first code cell must be tagged 'parameters'"
    src = "".join(first["source"])
    for name, value in [("scale", '"book"'), ("seed", None), ("device", '"auto"')]:
        assert re.search(rf"^{name}\s*=", src, re.M), f"parameters cell lacks {name}"
        if value:
            assert re.search(rf"^{name}\s*=\s*{re.escape(value)}", src, re.M)
    assert cells[0]["cell_type"] == "markdown" and "".join(cells[0]["source"]).startswith("# ")
    ids = [c.get("id") for c in cells]  # nbformat 4.5: every cell has a unique id (nbformat warns, later fails, without)
    assert None not in ids and len(set(ids)) == len(ids), f"{nb}: cells without an id or with a repeated one"


def _toc_files(node):
    out = []
    if isinstance(node, dict):
        if "file" in node:
            out.append(node["file"])
        for v in node.values():
            out += _toc_files(v)
    elif isinstance(node, list):
        for v in node:
            out += _toc_files(v)
    return out


def test_toc_lists_every_chapter_and_every_listed_page_exists():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = set(_toc_files(toc)) | {toc["root"]}
    for nb in NOTEBOOKS:
        assert str(nb.relative_to(ROOT).with_suffix("")) in files, f"{nb} is not in _toc.yml"
    for f in files:
        assert any((ROOT / (f + ext)).is_file() for ext in (".md", ".ipynb")), f"_toc.yml names missing {f}"


def _names(reqs):
    return {re.split(r"[<>=!~ \[]", r, maxsplit=1)[0].lower(): r.replace(" ", "") for r in reqs}


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["dev"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = [r for r in pip if not r.startswith("-e")]
    assert _names(listed) == _names(wanted)
    assert any(r.startswith("-e") for r in pip), "environment.yml should install the library itself"
    py = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    assert py.startswith("python=3.11") or py.startswith("python>=3.11")


def test_torch_pins():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch>=2.14" in deps and any(d.startswith("torchvision>=") for d in deps)


SHARED = ROOT.parent / "shared" / "papers"


@pytest.mark.skipif(not SHARED.is_dir(), reason="no shared/ checkout beside the repository")
def test_vendored_claims_equal_shared():
    for src in sorted(SHARED.glob("*/claims.yaml")):
        ours = ROOT / "papers" / src.parent.name / "claims.yaml"
        assert ours.is_file() and ours.read_text() == src.read_text(), f"{ours} differs from {src}: copy it again"
