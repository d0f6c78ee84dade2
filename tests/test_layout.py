"""The layout's rules (CONTRIBUTING.md, "What may import what"), read off the source with ``ast``.

Kinds of module in ``lib/sgdbook``:

- leaf: ``sgdbook.book.{paths,device,progress,scales}``: import nothing from ``sgdbook``;
- general: the estimators (every other module outside ``book``, ``papers``, ``appendix`` and
  ``synthesis``): import each other and the leaves;
- paper ``<pkg>``: ``sgdbook.papers.<pkg>.*``: import the general estimators, the leaves and their
  own package, never another paper's;
- chapter ``<name>``: the chapters across papers, ``sgdbook.appendix.*`` and ``sgdbook.synthesis.*``
  (shaped like a paper package): import the general estimators, the leaves, their own package and
  the papers' packages; nothing imports them;
- book: the rest of ``sgdbook.book``: anything but a paper's or a chapter's package, which they
  find by name (``sgdbook.book.layout``).

Every import counts, also one inside a function. A chapter's settings module holds its
``SETTINGS`` table and plain data (numbers, strings, lists, dicts ...), nothing that builds a model:
it defines no function or class, and it (like any module of its settings package it shares data
with) imports nothing but ``ScaleTable``, ``math``/``fractions`` and its own settings package.
"""

import ast
import fractions
import importlib
from pathlib import Path

import pytest

from sgdbook.book import layout
from sgdbook.book.paths import ROOT
from sgdbook.book.scales import ScaleTable

LIB = ROOT / "lib"
PKG = LIB / "sgdbook"
LEAVES = {f"sgdbook.book.{m}" for m in ("paths", "device", "progress", "scales")}
CHAPTER_PACKAGES = ("appendix", "synthesis")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(LIB).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(name: str) -> bool:
    base = LIB.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def kind(name: str) -> str:
    """'leaf', 'general', 'book', 'paper:<pkg>', 'chapter:<name>' or 'papers' (the namespace)."""
    parts = name.split(".")
    if name in LEAVES:
        return "leaf"
    if parts[:2] == ["sgdbook", "book"]:
        return "book"
    if parts[:2] == ["sgdbook", "papers"]:
        return f"paper:{parts[2]}" if len(parts) > 2 else "papers"
    if len(parts) > 1 and parts[1] in CHAPTER_PACKAGES:
        return f"chapter:{parts[1]}"
    return "general"


def sgdbook_imports(path: Path):
    """(line, imported sgdbook module) for every import in the file, relative ones resolved."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "sgdbook"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                src = ".".join(base + ([node.module] if node.module else []))
            else:
                src = node.module or ""
            if src.split(".")[0] != "sgdbook":
                continue
            for a in node.names:  # `from pkg import module` imports the module
                sub = f"{src}.{a.name}"
                out.append((node.lineno, sub if is_module(sub) else src))
    return sorted(set(out))


def allowed(importer: str, imported: str) -> bool:
    a, b = kind(importer), kind(imported)
    if a == "leaf":
        return False
    if b in ("leaf", "general"):
        return a != "leaf"
    if a == "general":
        return False
    if a.startswith("paper:"):
        return b == a
    if a.startswith("chapter:"):
        return b == a or b.startswith("paper:")
    if a in ("book", "papers"):
        return b == "book" or (a == "papers" and b == "papers")
    return False


SOURCES = sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def test_the_import_rules_are_those_of_contributing():
    assert kind("sgdbook.book.scales") == "leaf" and kind("sgdbook.curvature.eigen") == "general"
    assert kind("sgdbook.papers.vmf_directional.theory") == "paper:vmf_directional"
    assert kind("sgdbook.appendix.dry_run") == "chapter:appendix" and kind("sgdbook.book.ledger") == "book"
    assert allowed("sgdbook.synthesis.x", "sgdbook.papers.a.y") and not allowed("sgdbook.papers.a.y", "sgdbook.synthesis.x")
    assert not allowed("sgdbook.gradients", "sgdbook.appendix.dry_run")
    assert allowed("sgdbook.gradients", "sgdbook.functional") and allowed("sgdbook.data", "sgdbook.book.paths")
    assert not allowed("sgdbook.gradients", "sgdbook.book.ledger")
    assert not allowed("sgdbook.book.scales", "sgdbook.book.paths")
    assert allowed("sgdbook.papers.a.x", "sgdbook.papers.a.settings.y") and not allowed("sgdbook.papers.a.x", "sgdbook.papers.b")
    assert not allowed("sgdbook.papers.a.x", "sgdbook.book.chapter") and not allowed("sgdbook.book.report", "sgdbook.papers.a")
    assert allowed("sgdbook.book.chapter", "sgdbook.curvature")
    assert "sgdbook.functional" in {m for _, m in sgdbook_imports(PKG / "curvature" / "hvp.py")}  # `from ..functional`


def test_every_import_in_the_library_follows_the_rules():
    broken = []
    for path in SOURCES:
        me = module_name(path)
        for line, other in sgdbook_imports(path):
            if not allowed(me, other) and not other == me:
                broken.append(f"{path.relative_to(ROOT)}:{line}: {me} ({kind(me)}) imports {other} ({kind(other)})")
    assert not broken, "imports against CONTRIBUTING.md's rules:\n" + "\n".join(broken)


# ----------------------------------------------------------------------------- settings modules

PLAIN = (int, float, str, bool, type(None), fractions.Fraction)


def is_plain(value) -> bool:
    if isinstance(value, PLAIN):
        return True
    if isinstance(value, (list, tuple, set, frozenset)):
        return all(is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(is_plain(k) and is_plain(v) for k, v in value.items())
    return False


NOTEBOOKS = layout.notebooks()


def settings_module(nb):
    return importlib.import_module(f"{layout.package_of(nb.parent.name)}.settings.{layout.topic_of(nb.stem)}")


def _check_imports(path: Path, package: str) -> None:
    """A settings module imports ScaleTable, math/fractions, or its own settings package's modules:
    nothing that could build a model (no torch, no other part of sgdbook)."""
    where = path.relative_to(ROOT)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            ok = all(a.name in ("math", "fractions") for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            ok = node.level == 1 or node.module in ("__future__", "sgdbook.book.scales", "math", "fractions", package)
        else:
            continue
        assert ok, f"{where}:{node.lineno}: a settings module imports only ScaleTable, math/fractions and its settings package"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=str)
def test_settings_modules_hold_only_a_settings_table_and_plain_data(nb):
    try:
        mod = settings_module(nb)
    except ModuleNotFoundError:
        pytest.fail(f"{nb}: no settings module (see CONTRIBUTING.md, 'Adding a chapter')", pytrace=False)
    path = Path(mod.__file__)
    package = mod.__name__.rpartition(".")[0]
    where = path.relative_to(ROOT)
    for other in sorted(path.parent.glob("*.py")):  # the module and the private data modules it may share
        _check_imports(other, package)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        assert not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)), (
            f"{where}:{node.lineno}: a settings module holds numbers only; build models and data in the library")
    assert isinstance(getattr(mod, "SETTINGS", None), ScaleTable), f"{where} must define SETTINGS = ScaleTable(...)"
    for key, value in vars(mod).items():
        if key.startswith("__") or key == "SETTINGS" or value is ScaleTable or key in ("annotations", "math", "fractions"):
            continue
        if callable(value) and getattr(value, "__module__", "").startswith(package + "."):
            continue  # a helper of the settings package (it can import nothing that builds a model)
        assert is_plain(value), f"{where}: {key} = {type(value).__name__} is not plain data"
    table = mod.SETTINGS
    for scale, values in table.settings.items():
        for key, value in values.items():
            assert is_plain(value), f"{where}: SETTINGS[{scale!r}][{key!r}] is a {type(value).__name__}, not plain data"
    assert all(isinstance(v, str) for v in [*table.descriptions.values(), *table.paper_value.values()])
