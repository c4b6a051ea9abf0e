"""Architecture figures of the library: lines per module, the largest module, import cycles and imports of another
module's ``_private`` names, for before/after tables of a clean-up (``tests/test_architecture.py`` holds the limits).

Usage: ``python tools/arch_report.py [ROOT]`` prints a JSON summary; every import statement counts, including those
inside functions (a lazy import still couples two modules).
"""
from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

PACKAGES = ("spectra", "pruning", "webapp")


def module_name(root: Path, path: Path) -> str:
    """The dotted module name of ``path`` under ``root`` (``pkg/__init__.py`` → ``pkg``)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def library_files(root: Path, packages=PACKAGES) -> dict[str, Path]:
    """Every ``.py`` file of the given packages (those that exist) under ``root``, by module name."""
    out = {}
    for pkg in packages:
        for p in sorted((root / pkg).rglob("*.py")) if (root / pkg).is_dir() else []:
            out[module_name(root, p)] = p
    return out


def _resolve(mod: str, is_pkg: bool, level: int, target: str | None) -> str:
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, target] if target else base)


def imports_of(mod: str, path: Path, known: set[str]) -> list[tuple[str, str | None]]:
    """``(module, name)`` pairs imported by ``path`` that resolve to modules in ``known``; ``name`` is the imported
    attribute for ``from m import name`` (None for ``import m``)."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names if a.name in known]
        elif isinstance(node, ast.ImportFrom):
            src = _resolve(mod, is_pkg, node.level, node.module) if node.level else node.module
            for a in node.names:
                sub = f"{src}.{a.name}"
                if sub in known:
                    out.append((sub, None))
                elif src in known:
                    out.append((src, a.name))
    return out


def module_aliases(mod: str, path: Path, known: set[str]) -> dict[str, str]:
    """Local names bound to library modules in ``path`` (``import spectra.weights as W``, ``from . import weights``)."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in known and a.asname:
                    out[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom):
            src = _resolve(mod, is_pkg, node.level, node.module) if node.level else node.module
            for a in node.names:
                if f"{src}.{a.name}" in known:
                    out[a.asname or a.name] = f"{src}.{a.name}"
    return out


def private_imports(root: Path) -> list[str]:
    """``importer → module._name`` for every import of a leading-underscore name from another module, and every
    ``alias._name`` attribute read through an imported module."""
    files = library_files(root)
    extra = {module_name(root, p): p for p in root.glob("*.py")}
    bad = []
    for mod, path in {**files, **extra}.items():
        for src, name in imports_of(mod, path, set(files)):
            if name and name.startswith("_") and not name.startswith("__") and src != mod:
                bad.append(f"{mod} → {src}.{name}")
            if name is None and src.rsplit(".", 1)[-1].startswith("_") and not src.endswith("__main__"):
                bad.append(f"{mod} → {src}")
        aliases = module_aliases(mod, path, set(files))
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                bad.append(f"{mod} → {aliases[node.value.id]}.{node.attr}")
    return sorted(set(bad))


def import_cycles(root: Path) -> list[list[str]]:
    """Strongly connected components of more than one module in the import graph (Tarjan)."""
    files = library_files(root)
    graph = {m: sorted({s for s, _ in imports_of(m, p, set(files)) if s != m}) for m, p in files.items()}
    # a package's __init__ importing its own submodules is not a cycle of two jobs: drop parent → child edges
    graph = {m: [s for s in deps if not s.startswith(m + ".")] for m, deps in graph.items()}
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return comps


def line_counts(root: Path) -> dict[str, int]:
    """Lines of every library module and of the top-level scripts (app.py)."""
    files = {**library_files(root), **{module_name(root, p): p for p in root.glob("*.py")}}
    return {m: len(p.read_text().splitlines()) for m, p in files.items()}


#: the function caps of docs/ARCHITECTURE.md (lines of a function, its named parameters)
MAX_FUNCTION_LINES = 80
MAX_PARAMETERS = 12


def function_sizes(root: Path) -> dict[str, tuple[int, int]]:
    """``{module.qualname: (lines, parameters)}`` of every function and method of the library and of the top-level
    scripts; lines from ``def`` to the function's last line, parameters = the named ones (``self`` / ``cls`` and
    ``*args`` / ``**kwargs`` not counted)."""
    files = {**library_files(root), **{module_name(root, p): p for p in root.glob("*.py")}}
    out: dict[str, tuple[int, int]] = {}

    def visit(node, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = child.args
                names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs) if x.arg not in ("self", "cls")]
                out[f"{prefix}{child.name}"] = (child.end_lineno - child.lineno + 1, len(names))
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")

    for mod, path in files.items():
        visit(ast.parse(path.read_text()), f"{mod}.")
    return out


def oversized_functions(root: Path) -> dict[str, tuple[int, int]]:
    """The functions over :data:`MAX_FUNCTION_LINES` lines or :data:`MAX_PARAMETERS` parameters."""
    return {name: size for name, size in function_sizes(root).items()
            if size[0] > MAX_FUNCTION_LINES or size[1] > MAX_PARAMETERS}


def summary(root: Path) -> dict:
    lines = line_counts(root)
    largest = max(lines, key=lines.get)
    sizes = function_sizes(root)
    longest = max(sizes, key=lambda k: sizes[k][0])
    most = max(sizes, key=lambda k: sizes[k][1])
    return {"modules": len(lines), "total_lines": sum(lines.values()),
            "median_lines": sorted(lines.values())[len(lines) // 2],
            "largest": [largest, lines[largest]], "over_500": sorted(m for m, n in lines.items() if n > 500),
            "import_cycles": import_cycles(root), "private_imports": private_imports(root),
            "functions": len(sizes), "longest_function": [longest, sizes[longest][0]],
            "most_parameters": [most, sizes[most][1]],
            "over_function_caps": {k: list(v) for k, v in sorted(oversized_functions(root).items())}}


if __name__ == "__main__":
    print(json.dumps(summary(Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()), indent=1,
                     ensure_ascii=False))
