"""The layer rule of docs/architecture.md, checked on the real import graph.

The `## Layers` table in docs/architecture.md is the one definition of the layers (rows bottom to top, one folder per
layer, plus the scripts); this file parses it, so a module's layer is the folder it sits in and the doc and the rule
cannot drift apart. Imports are read with `ast` (nothing is imported), at module
level and inside functions. A module may import only modules of its own or a lower layer; there are no cycles;
utils/models/data never import the scripts; a function-level import is allowed only for a library listed under
`## Lazy imports`, with a comment on its line saying it is optional or heavy; every module is in both tables.
The last test runs each check on a small made-up tree to show it catches what it should. In tests/, no test module
imports another (shared fixtures and helpers live in conftest.py and fixtures_<area>.py).
"""

from __future__ import annotations

import ast
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = "docs/architecture.md"
PACKAGES = ("models", "utils", "data", "benchmarks", "classify")  # scanned folders (tests/ may import anything)
SCRIPTS = ("train", "val", "detect", "export", "hubconf", "serve")
OURS = {*PACKAGES, *SCRIPTS, "tests"}
LAZY_WORDS = ("optional", "heavy")  # one of these must be in a function-level import's comment


@dataclass(frozen=True)
class Import:
    path: str  # importing file, relative to the root
    source: str  # importing module, dotted
    target: str  # imported module, dotted; `from utils.core import args` resolves to utils.core.args
    line: int
    lazy: bool  # inside a function body: runs at call time, not import time
    comment: str  # the line's comment, lower case ('' if none)

    @property
    def ours(self) -> bool:
        return self.target.split(".")[0] in OURS

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def _dotted(rel: Path) -> str:
    """utils/core/boxes.py -> utils.core.boxes; models/__init__.py -> models."""
    parts = rel.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_files(root: Path) -> dict[str, Path]:
    """Every scanned module: the four scripts and each .py under PACKAGES, dotted name -> file."""
    files = [root / f"{s}.py" for s in SCRIPTS if (root / f"{s}.py").is_file()]
    for pkg in PACKAGES:
        files += sorted(f for f in (root / pkg).rglob("*.py") if "__pycache__" not in f.parts)
    return {_dotted(f.relative_to(root)): f for f in files}


def _targets(node: ast.Import | ast.ImportFrom, modules: set[str], package: str) -> list[str]:
    """The modules an import statement loads (`from pkg import mod` names the submodule when there is one)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:  # relative: level 1 is the importing module's own package
        parts = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(parts + ([base] if base else []))
    return list(dict.fromkeys(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names))


def _walk(node: ast.AST, lazy: bool = False):  # type: ignore[no-untyped-def]
    """(import node, inside a function?) for every import statement under node."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, lazy
        yield from _walk(child, lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))


def _file_imports(root: Path, name: str, file: Path, modules: set[str]) -> list[Import]:
    text = file.read_text(encoding="utf-8")
    lines = text.splitlines()
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node, lazy in _walk(ast.parse(text, str(file))):
        line = lines[node.lineno - 1]
        comment = line.split("#", 1)[1].strip().lower() if "#" in line else ""
        for target in _targets(node, modules, package):
            out.append(Import(str(file.relative_to(root)), name, target, node.lineno, lazy, comment))
    return out


@cache
def scan(root: Path) -> tuple[dict[str, Path], tuple[Import, ...]]:
    """(modules, every import statement of every module), read once per root."""
    modules = module_files(root)
    imports = [i for n, f in modules.items() for i in _file_imports(root, n, f, set(modules))]
    return modules, tuple(imports)


def _section(root: Path, heading: str, required: bool = True) -> list[list[str]]:
    """The body rows (cells stripped) of the first table under `## heading` in docs/architecture.md."""
    text = (root / DOC).read_text(encoding="utf-8")
    m = re.search(rf"^## {re.escape(heading)}\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m or not required, f"{DOC} has no '## {heading}' section"
    if not m:
        return []
    rows = [r for r in m.group(1).splitlines() if r.startswith("|")][2:]  # skip header and |---| rows
    return [[c.strip() for c in r.strip().strip("|").split("|")] for r in rows]


@cache
def layer_entries(root: Path) -> tuple[tuple[str, int, str], ...]:
    """(folder or file, layer index from the bottom, layer name) from the `## Layers` table: a cell names folders
    (`utils/core/`: every module below it) and single files (`train.py`)."""
    rows = _section(root, "Layers")
    return tuple((e, i, name) for i, (name, cell, *_) in enumerate(rows) for e in re.findall(r"`([^`]+)`", cell))


def _matches(module: str, entry: str) -> bool:
    """utils/core/ holds utils.core.x (and deeper); train.py is the module train."""
    if entry.endswith("/"):
        return module.startswith(entry.rstrip("/").replace("/", ".") + ".")
    return module == _dotted(Path(entry))


@cache
def layers(root: Path) -> dict[str, tuple[int, str]]:
    """Module -> (layer index from the bottom, layer name): its file's entry, else the deepest folder holding it."""
    out: dict[str, tuple[int, str]] = {}
    for name in scan(root)[0]:
        hits = [(len(e), i, n) for e, i, n in layer_entries(root) if _matches(name, e)]
        if hits:
            out[name] = max(hits)[1:]
    return out


def lazy_libraries(root: Path) -> tuple[str, ...]:
    """Libraries that may be imported inside a function, from the `## Lazy imports` table."""
    return tuple(lib for row in _section(root, "Lazy imports") for lib in re.findall(r"`([^`]+)`", row[0]))


def lazy_exempt(root: Path) -> set[str]:
    """Modules whose function-level imports are all deliberate, from the optional `## Lazy-import exceptions` table."""
    return {
        _dotted(Path(p))
        for row in _section(root, "Lazy-import exceptions", required=False)
        for p in re.findall(r"`([^`]+\.py)`", row[0])
    }


def _import_free_init(root: Path, name: str) -> bool:
    modules, imports = scan(root)
    return name in modules and modules[name].name == "__init__.py" and not any(i.source == name for i in imports)


def _layer_of(root: Path, name: str) -> tuple[int, str] | None:
    """A module's layer; an import-free package __init__ sits below everything (importing it loads nothing)."""
    return (-1, "package") if _import_free_init(root, name) else layers(root).get(name)


def unplaced_modules(root: Path) -> list[str]:
    """Modules missing from the layer table, and table entries naming no module."""
    modules, table = scan(root)[0], layers(root)
    missing = [
        f"{modules[n].relative_to(root)} is in no layer — add it to the '## Layers' table of {DOC}"
        for n in modules
        if n not in table and not _import_free_init(root, n)
    ]
    stale = [
        f"{DOC} '## Layers' lists {e}, which does not exist" for e, *_ in layer_entries(root) if not (root / e).exists()
    ]
    return missing + stale


def upward_imports(root: Path) -> list[str]:
    """Imports of our modules that point to a higher layer than the importer's."""
    out = []
    for imp in scan(root)[1]:
        src, dst = _layer_of(root, imp.source), _layer_of(root, imp.target) if imp.ours else None
        if src and dst and dst[0] > src[0]:
            out.append(
                f"{imp.where} imports {imp.target}: layer '{dst[1]}' is above '{src[1]}' — a module may import "
                f"only its own or lower layers ({DOC}, '## Layers'); move the code that needs it down"
            )
    return out


def _shortest_cycle(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """The shortest import chain start -> ... -> start (breadth-first), or None."""
    prev: dict[str, str] = {}
    queue = deque([start])
    while queue:
        m = queue.popleft()
        for t in sorted(graph.get(m, ())):
            if t == start:
                chain = [m]
                while chain[-1] != start:
                    chain.append(prev[chain[-1]])
                return chain[::-1] + [start]
            if t not in prev:
                prev[t] = m
                queue.append(t)
    return None


def import_cycles(root: Path) -> list[str]:
    """Every import cycle among our modules (module- and function-level imports alike), each reported once."""
    graph: dict[str, set[str]] = {}
    for imp in scan(root)[1]:
        if imp.ours and imp.target != imp.source:
            graph.setdefault(imp.source, set()).add(imp.target)
    seen: set[frozenset[str]] = set()
    out = []
    for m in sorted(graph):
        chain = _shortest_cycle(graph, m)
        if chain and frozenset(chain) not in seen:
            seen.add(frozenset(chain))
            out.append("import cycle: " + " -> ".join(chain))
    return out


def script_imports(root: Path) -> list[str]:
    """utils/, models/ and data/ importing a top-level script (train, val, detect, export)."""
    return [
        f"{imp.where} imports the script {imp.target} — utils/models/data never import scripts; pass what is "
        f"needed in (e.g. Trainer gets val.run as `validate`)"
        for imp in scan(root)[1]
        if imp.source.split(".")[0] in ("utils", "models", "data") and imp.target.split(".")[0] in SCRIPTS
    ]


def lazy_import_problems(root: Path) -> list[str]:
    """Function-level imports other than a listed heavy/optional library with a comment saying so."""
    allowed, exempt, modules = lazy_libraries(root), lazy_exempt(root), scan(root)[0]
    out = [
        f"{DOC} '## Lazy-import exceptions' lists {n.replace('.', '/')}.py, which does not exist"
        for n in sorted(exempt - set(modules))
    ]
    for imp in (i for i in scan(root)[1] if i.lazy and i.source not in exempt):
        if imp.ours:
            out.append(
                f"{imp.where} imports {imp.target} inside a function — our modules are imported at module "
                f"level (the layer order rules out cycles)"
            )
        elif not any(imp.target == lib or imp.target.startswith(lib + ".") for lib in allowed):
            out.append(
                f"{imp.where} imports {imp.target} inside a function — import it at module level, or list it "
                f"under '## Lazy imports' in {DOC} if it is a heavy optional library"
            )
        elif not any(w in imp.comment for w in LAZY_WORDS):
            out.append(
                f"{imp.where} imports {imp.target} inside a function without a comment saying why "
                f"(one with 'optional' or 'heavy')"
            )
    return out


def unmapped_modules(root: Path) -> list[str]:
    """Modules with no row in the `## Module map` table, and rows naming no module (the map says what each holds)."""
    rows = [p for row in _section(root, "Module map") for p in re.findall(r"`([^`]+\.py)`", row[0])]
    mapped = {_dotted(Path(p)) for p in rows}
    missing = [
        f"{f.relative_to(root)} has no row in the '## Module map' of {DOC}"
        for n, f in scan(root)[0].items()
        if n not in mapped and not _import_free_init(root, n)
    ]
    return missing + [
        f"{DOC} '## Module map' lists {p}, which does not exist" for p in rows if not (root / p).is_file()
    ]


CHECKS: list[Callable[[Path], list[str]]] = [
    unplaced_modules,
    upward_imports,
    import_cycles,
    script_imports,
    lazy_import_problems,
    unmapped_modules,
]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_repository_keeps_the_architecture_rules(check: Callable[[Path], list[str]]) -> None:
    problems = check(ROOT)
    assert not problems, "\n".join(problems)


def imported_test_modules(text: str) -> list[str]:
    """`tests.test_x` modules that a tests/*.py source imports (import / from-import, any depth)."""
    found = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found += [node.module] + [f"{node.module}.{a.name}" for a in node.names if node.module == "tests"]
    return [m for m in found if m.startswith("tests.test_")]


def test_no_test_module_imports_another() -> None:
    """Shared fixtures and helpers have one owner, tests/conftest.py or tests/fixtures_<area>.py: a test module that
    imported another would run that module's setup and tie the two files together."""
    probe = "from tests import test_x\nimport tests.test_y as y\nfrom tests.fixtures_a import b\nimport tests"
    assert imported_test_modules(probe) == ["tests.test_x", "tests.test_y"]
    problems = [
        f"tests/{f.name} imports {m}"
        for f in sorted((ROOT / "tests").glob("*.py"))
        for m in imported_test_modules(f.read_text())
    ]
    assert not problems, "\n".join(problems)


def test_layer_table_is_read() -> None:
    """Guards the parser: a mis-formatted table must not make every check pass vacuously."""
    table = layers(ROOT)
    assert table["utils.core.errors"] == (0, "core") and table["train"][1] == "scripts"
    assert table["benchmarks.formats"][1] == "scripts" and table["models.checkpoint"][1] == "model"
    assert table["utils.core.boxes"][0] < table["models.yolo"][0] < table["utils.training.trainer"][0]
    assert "onnxruntime" in lazy_libraries(ROOT)
    assert any(i.lazy and i.target == "onnxruntime" for i in scan(ROOT)[1])  # function-level imports are seen


MINI_DOC = """# doc
## Module map
| module | what |
|---|---|
| `utils/core/low.py` `utils/top/high.py` `train.py` | x |

## Layers
| layer | folders |
|---|---|
| core | `utils/core/` |
| top | `utils/top/` `train.py` |

## Lazy imports
| library | why |
|---|---|
| `onnx` | optional |
"""


CLEAN_TREE = {
    "utils/core/low.py": "import os\n",
    "train.py": "import utils.top.high\n",
    "utils/top/high.py": "import utils.core.low\n\n\ndef f():\n    import onnx  # optional\n",
}


def _write_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in {DOC: MINI_DOC, **files}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        if text is not None:  # None: leave the file out
            (root / rel).write_text(text)
    return root


@pytest.mark.parametrize(
    "files, check, expected",
    [
        (
            {"utils/core/low.py": "import utils.top.high\n"},
            upward_imports,
            "utils/core/low.py:1 imports utils.top.high: layer 'top' is above",
        ),
        ({"utils/core/low.py": "from utils.top import high\n"}, upward_imports, "layer 'top' is above 'core'"),
        ({"utils/core/low.py": "import train\n"}, upward_imports, "imports train: layer 'top' is above 'core'"),
        ({"utils/core/low.py": "import train\n"}, script_imports, "utils/core/low.py:1 imports the script train"),
        ({"utils/top/high.py": "import train\n"}, import_cycles, "import cycle: train -> utils.top.high -> train"),
        (
            {"utils/top/high.py": "def f():\n    import utils.core.low\n"},
            lazy_import_problems,
            "utils/top/high.py:2 imports utils.core.low",
        ),
        ({"utils/top/high.py": "def f():\n    import csv\n"}, lazy_import_problems, "import it at module level"),
        ({"utils/top/high.py": "def f():\n    import onnx\n"}, lazy_import_problems, "without a comment"),
        ({"utils/new.py": ""}, unplaced_modules, "utils/new.py is in no layer"),
        ({"utils/core/new.py": ""}, unmapped_modules, "utils/core/new.py has no row"),
        ({"utils/core/low.py": None}, unmapped_modules, "lists utils/core/low.py, which does not exist"),
    ],
)
def test_checks_catch_violations(
    tmp_path: Path, files: dict[str, str | None], check: Callable[[Path], list[str]], expected: str
) -> None:
    """Each check on a made-up tree: silent on the clean tree, and reports the one break put into it."""
    assert check(_write_tree(tmp_path / "clean", CLEAN_TREE)) == []
    problems = check(_write_tree(tmp_path / "broken", {**CLEAN_TREE, **files}))
    assert any(expected in p for p in problems), problems
