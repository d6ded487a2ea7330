"""Structure the design relies on: one owner of the manifest and one place that commits,
layers that only point down (across packages, and inside the store by folder), no import
cycle inside any package, folders and functions of a readable size (docs/design.md,
"Module map")."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from sisa.store.manifest import CheckpointFile, Manifest, RetrainPlan, SliceFile, from_flat

PKG = Path(__file__).resolve().parent.parent / "sisa"
MODULES = sorted(PKG.rglob("*.py"))

# Layers from the bottom up: a module may import from its own layer and the ones below.
LAYERS = [
    {"errors", "_version", "_crash", "progress", "tasks"},
    {"store"},
    {"engine", "deep", "aggregate"},
    {"unlearn", "estimators"},
    {"baselines", "metrics", "datasets"},
    {"compare", "serve", "client"},
    {"cli"},
]
# A folder that outgrows its budget is split by concern, as sisa/store was (io, format,
# manifest, read, write); a module may grow as long as its folder stays in budget.
MAX_FOLDER_LINES, MAX_FUNCTION_LINES = 3200, 62
# The store's folders from the bottom up: a module imports from its own folder and below.
STORE_LEVELS = ["io", "format", "manifest", "read", "write", "store"]
LONG_FUNCTIONS = {"build_parser"}  # the CLI's argument table


def _name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    return ".".join(rel.parts).removesuffix(".__init__")


def _imports(path: Path) -> set[str]:
    """Absolute names of the sisa modules ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = _name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            out |= {mod} | {f"{mod}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return {m for m in out if m.split(".")[0] == "sisa"}


def _layer(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else "__init__"
    for i, layer in enumerate(LAYERS):
        if top in layer:
            return i
    return len(LAYERS)  # sisa/__init__: the top


def test_only_the_manifest_module_writes_the_manifest_file():
    """Every commit goes through sisa.store.manifest.write (its disk half, the codec,
    writes the files); Store.commit/publish are its only callers and hand it a Manifest
    built by that model's with_* methods."""
    writers, io_callers, callers = [], [], []
    for path in MODULES:
        src = path.read_text()
        name = _name(path)
        if re.search(r"write_atomic\(\s*(MANIFEST|\"manifest\.json\"|'manifest\.json')", src):
            writers.append(name)
        if re.search(r"\bio\.write\(", src):
            io_callers.append(name)
        if re.search(r"\b(mf|manifest)\.write\(", src):
            callers.append(name)
    assert writers == ["sisa.store.manifest.codec"]
    assert io_callers == ["sisa.store.manifest.build"]
    assert callers == ["sisa.store.store"]


def test_no_module_edits_a_manifest_section_by_hand():
    """Section edits live in Manifest.with_*: nobody else assigns into a manifest."""
    pattern = re.compile(r"(manifest|new|m)\[\"(model|slices|pending|checkpoints|index|"
                         r"tombstones|audit|holdout)\"\]\s*(\[[^]]+\]\s*)*=[^=]")
    offenders = [_name(p) for p in MODULES
                 if _name(p) != "sisa.store.manifest.model" and pattern.search(p.read_text())]
    assert offenders == []


def test_a_manifest_cannot_be_changed_in_place():
    part = {"file": "index/bucket=0000/" + "0" * 32 + ".arrow", "sha256": "0" * 64,
            "bytes": 1, "rows": 0}
    m = from_flat({"generation": 0, "assignment": {"n_shards": 2, "n_slices": 2},
                   "schema": {}, "slices": {f"{s}/{r}": {**part, "rows": 1, "shard": s,
                                                         "labels": [0, 1]}
                                            for s in range(2) for r in range(2)},
                   "index": {"parts": [part], "rows": 0}, "tombstones": None,
                   "model": {"classes": [0, 1], "checkpoints": {}}})
    assert isinstance(m, Manifest) and m.shard_rows(1) == 2
    assert not isinstance(m, dict)  # no dict mutators to guard: a read-only Mapping
    with pytest.raises(TypeError):
        m["model"] = None  # type: ignore[index]
    with pytest.raises(AttributeError):
        m.update(model=None)  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        m.extra = 1  # type: ignore[attr-defined]
    entry = m.slice(0, 0)
    assert isinstance(entry, SliceFile) and entry.labels == (0, 1)
    with pytest.raises(AttributeError):
        entry.rows = 5  # type: ignore[misc]  # a frozen record
    plan = RetrainPlan.of([(1, 3), (1, 1), (0, 2)])
    assert plan == {0: 2, 1: 1} and plan.covers(1, 1) and not plan.covers(0, 1)
    with pytest.raises(TypeError):
        plan[2] = 0  # type: ignore[index]
    assert m.pending_plan() == {0: 0, 1: 0}
    ck = [CheckpointFile("x", "0" * 64, 1, rows=1, shard=0, slice=r, lineage="0" * 64)
          for r in range(2)]
    done = m.with_checkpoints(ck)
    assert done.pending_plan() == {1: 0} and m.pending_plan() == {0: 0, 1: 0}


def test_imports_only_point_down_the_layers():
    up = []
    for path in MODULES:
        mine = _layer(_name(path))
        for imp in _imports(path):
            if imp != "sisa" and _layer(imp) > mine:
                up.append(f"{_name(path)} -> {imp}")
    assert up == []


def _runtime_imports(path: Path) -> set[str]:
    """The sisa modules ``path`` imports when it runs: at the top or inside functions, but
    not under ``if TYPE_CHECKING:`` (annotations name the facade they are handed)."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    package = _name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    known = {_name(p) for p in MODULES}
    out = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            out |= {f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return {m for m in out if m in known} - {_name(path)}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_inside_any_package():
    """Not only across layers: inside every package (and between a package and its
    ``__init__``) the modules form no circle, function-level imports included."""
    graph = {_name(p): _runtime_imports(p) for p in MODULES}
    assert _cycles(graph) == []


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _store_level(module: str) -> int:
    parts = module.split(".")
    if len(parts) < 3:
        return len(STORE_LEVELS)  # sisa.store itself: the package's face
    return STORE_LEVELS.index(parts[2]) if parts[2] in STORE_LEVELS else len(STORE_LEVELS)


def test_the_store_imports_only_down_its_folders():
    """io <- format <- manifest <- read <- write <- store.py (the facade)."""
    up = []
    for path in (p for p in MODULES if _name(p).startswith("sisa.store.")):
        mine = _store_level(_name(path))
        for imp in _runtime_imports(path):
            if imp.startswith("sisa.store") and _store_level(imp) > mine:
                up.append(f"{_name(path)} -> {imp}")
    assert up == []


def test_inside_the_store_only_the_facade_commits():
    """Writers (sisa/store/write) are producers: they return a new manifest; Store.commit
    is the one place a state becomes the store's (other layers hand it theirs)."""
    committers = sorted(_name(p) for p in MODULES if _name(p).startswith("sisa.store")
                        and re.search(r"\.commit\(", p.read_text()))
    assert committers == ["sisa.store.store"]


def test_folders_and_functions_stay_readable():
    too_long, folders = [], {}
    for path in MODULES:
        src = path.read_text()
        folders[path.parent] = folders.get(path.parent, 0) + src.count("\n")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES and node.name not in LONG_FUNCTIONS:
                    too_long.append(f"{_name(path)}.{node.name}: {n} lines")
    too_long += [f"{folder.relative_to(PKG.parent)}/: {n} lines" for folder, n in folders.items()
                 if n > MAX_FOLDER_LINES]
    assert too_long == []


TESTS = Path(__file__).resolve().parent
# The project-wide checks stay at tests/ root, beside the tests of sisa's root modules
# (sisa/metrics.py -> tests/test_metrics.py); everything else lives in the folder of the
# subpackage it tests (sisa/store -> tests/store/), fixtures in tests/data/.
PROJECT_TESTS = {"test_architecture", "test_benchmarks", "test_docs", "test_examples",
                 "test_readme_walkthrough", "test_types"}


def test_tests_mirror_the_package():
    """A newcomer finds a module's tests by its path: every folder under tests/ (but
    data/) is a sisa package, and a test module at the root checks the whole project or
    one of sisa's root modules."""
    stray = []
    for folder in sorted(p for p in TESTS.rglob("*") if p.is_dir()):
        rel = folder.relative_to(TESTS)
        if rel.parts[0] == "data" or any(n == "__pycache__" or n.startswith(".")
                                         for n in rel.parts):
            continue
        if not (PKG / rel / "__init__.py").is_file():
            stray.append(f"tests/{rel.as_posix()}/ names no sisa package")
        elif not (folder / "__init__.py").is_file():
            stray.append(f"tests/{rel.as_posix()}/ has no __init__.py")
    root_modules = {f"test_{p.stem}" for p in PKG.glob("*.py")}
    stray += [f"tests/{p.name} belongs in a subpackage's folder"
              for p in sorted(TESTS.glob("test_*.py"))
              if p.stem not in PROJECT_TESTS | root_modules]
    assert stray == []


def _test_modules() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "data" not in p.relative_to(TESTS).parts)


def test_no_test_module_imports_from_conftest():
    """conftest.py holds fixtures, which pytest hands to tests; shared code is in
    tests/helpers.py (or a folder's helpers module), imported like any module."""
    offenders = []
    for path in _test_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module or ''}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if any("conftest" in n.split(".") for n in names):
                offenders.append(f"{path.relative_to(TESTS)}:{node.lineno}")
    assert offenders == []
