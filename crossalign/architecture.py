"""Graphs of pipelines and of the package itself: topological order, cycles, Mermaid
text.

Two chapters draw diagrams that must stay true. Chapter 4 checks that a pipeline drawn
as a Mermaid flowchart is a DAG (the seed's is not) and finds its cycle; chapter 10
draws the package's architecture from the real module list and the real ``import``
statements, so the diagram cannot drift from the code. Everything here works on plain
data:

- a graph is a list of ``(source, target)`` edges over string node ids;
- :func:`parse_mermaid_edges` reads the edges (and node labels) of a ``graph TD``
  flowchart;
- :func:`topological_order` sorts a DAG or raises :class:`CycleError` naming one cycle;
- :func:`package_modules` and :func:`import_graph` read a package with ``pkgutil`` and
  ``ast`` (nothing is imported except the package itself, to find where it lives);
- :func:`group_by_subpackage` and :func:`architecture_mermaid` fold the module graph
  into one node per sub-package or top-level module.

``python -m crossalign.architecture`` prints the package's diagram.
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import pkgutil
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

Edge = tuple[str, str]

_NODE = r"([A-Za-z_][\w]*)\s*(?:\[\s*\"?([^\]\"]*)\"?\s*\])?"
_EDGE_LINE = re.compile(
    rf"^\s*{_NODE}\s*(-->|-\.->|==>)\s*(?:\|[^|]*\|\s*)?{_NODE}\s*;?\s*$"
)
_NODE_LINE = re.compile(rf"^\s*{_NODE}\s*;?\s*$")
_HEADER = re.compile(r"^\s*(graph|flowchart)\s+(TD|TB|BT|LR|RL)\s*$")


class CycleError(ValueError):
    """A graph that should be acyclic has a cycle; ``cycle`` lists its nodes in
    order."""

    def __init__(self, cycle: Sequence[str]) -> None:
        self.cycle = list(cycle)
        path = " --> ".join([*self.cycle, self.cycle[0]])
        super().__init__(
            f"the graph has a cycle: {path}; a data flow must be a DAG (remove or "
            "reverse an edge)"
        )


@dataclass(frozen=True)
class Flowchart:
    """A Mermaid flowchart as data: its direction, node labels and edges, in drawing
    order."""

    direction: str
    labels: dict[str, str]
    edges: list[Edge]

    @property
    def nodes(self) -> list[str]:
        """Every node id, in order of first appearance."""
        return list(self.labels)


def parse_mermaid_edges(text: str) -> Flowchart:
    """Read a Mermaid ``graph``/``flowchart`` of ``A[label] --> B[label]`` lines into a
    :class:`Flowchart`.

    Accepts ``-->``, ``-.->`` and ``==>`` arrows, edge texts (``A -->|text| B``), lines
    that only declare a node (``A["label"]``), quoted labels and ``%%`` comments; a
    node's label is the first one given for it (its id otherwise). Any other line raises
    a ``ValueError`` naming the line, so that a typo does not silently drop an edge from
    the graph being checked.
    """
    lines = [
        line
        for line in text.strip().splitlines()
        if line.strip() and not line.strip().startswith("%%")
    ]
    if not lines:
        raise ValueError(
            "text is empty: expected a Mermaid flowchart starting with 'graph TD'"
        )
    header = _HEADER.match(lines[0])
    if header is None:
        raise ValueError(
            f"line 1 {lines[0].strip()!r} must be a header such as 'graph TD' or "
            "'flowchart LR'"
        )
    labels: dict[str, str] = {}
    edges: list[Edge] = []
    for number, line in enumerate(lines[1:], start=2):
        node_only = _NODE_LINE.match(line)
        match = _EDGE_LINE.match(line)
        if node_only is not None:
            declared = [node_only.groups()]
        elif match is not None:
            source, source_label, _, target, target_label = match.groups()
            declared = [(source, source_label), (target, target_label)]
            edges.append((source, target))
        else:
            raise ValueError(
                f"line {number} {line.strip()!r} is not an edge of the form 'A[label] "
                "--> B[label]'"
            )
        for node, label in declared:
            if node not in labels or (labels[node] == node and label):
                labels[node] = label.strip() if label else node
    return Flowchart(direction=header.group(2), labels=labels, edges=edges)


def find_cycle(edges: Iterable[Edge]) -> list[str] | None:
    """One cycle of the directed graph as a list of nodes (``[a, b]`` for ``a->b->a``),
    or ``None``.

    Depth-first search with three colours: meeting a node that is still on the current
    path (grey) closes a cycle, which is then read off the path. Self-loops count as
    cycles.
    """
    successors = _successors(edges)
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for root in successors:
        if root in state:
            continue
        path, iterators = [root], [iter(successors[root])]
        state[root] = 1
        while path:
            nxt = next(iterators[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                iterators.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt) :]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                iterators.append(iter(successors[nxt]))
    return None


def topological_order(edges: Iterable[Edge], nodes: Iterable[str] = ()) -> list[str]:
    """The nodes in an order where every edge points forward (Kahn's algorithm, stable).

    Ties are broken by first appearance (``nodes`` first, then edge order), so the
    answer is deterministic. Raises :class:`CycleError` with one cycle when there is no
    such order.
    """
    edges = list(edges)
    successors = _successors(edges, nodes)
    indegree = dict.fromkeys(successors, 0)
    for _, target in edges:
        indegree[target] += 1
    position = {node: i for i, node in enumerate(successors)}
    ready = sorted(
        (node for node, d in indegree.items() if d == 0), key=position.__getitem__
    )
    order: list[str] = []
    while ready:
        node = ready.pop(0)
        order.append(node)
        for target in successors[node]:
            indegree[target] -= 1
            if indegree[target] == 0:
                ready.append(target)
                ready.sort(key=position.__getitem__)
    if len(order) < len(successors):
        cycle = find_cycle(edges)
        assert cycle is not None  # Kahn's algorithm stops early only on a cycle
        raise CycleError(cycle)
    return order


def _successors(
    edges: Iterable[Edge], nodes: Iterable[str] = ()
) -> dict[str, list[str]]:
    """Adjacency lists in first-appearance order (duplicates kept: they count for
    in-degrees)."""
    successors: dict[str, list[str]] = {node: [] for node in nodes}
    for source, target in edges:
        successors.setdefault(source, []).append(target)
        successors.setdefault(target, [])
    return successors


def flowchart_mermaid(
    labels: dict[str, str],
    edges: Sequence[Edge],
    direction: str = "TD",
    dashed: Iterable[Edge] = (),
) -> str:
    """Mermaid text for a flowchart: one ``id["label"]`` line per node, then one line
    per edge."""
    dashed = set(dashed)
    unknown = sorted({node for edge in edges for node in edge} - set(labels))
    if unknown:
        raise ValueError(
            f"edges use nodes without a label: {unknown}; add them to labels"
        )
    lines = [f"graph {direction}"]
    lines += [f'    {node}["{label}"]' for node, label in labels.items()]
    lines += [f"    {a} {'-.->' if (a, b) in dashed else '-->'} {b}" for a, b in edges]
    return "\n".join(lines)


def package_modules(package: str = "crossalign") -> list[str]:
    """Every module of ``package`` (sub-packages and their modules included), sorted by
    name.

    Found with ``pkgutil.iter_modules`` folder by folder, so that only the package
    itself is imported (``pkgutil.walk_packages`` would import every sub-package to find
    its folder); the package itself is listed as well (its ``__init__``).
    """
    root = importlib.import_module(package)
    if not hasattr(root, "__path__"):
        raise ValueError(f"{package!r} is a module, not a package; pass a package name")
    names = [package]
    folders = [(list(root.__path__), package)]
    while folders:
        paths, prefix = folders.pop()
        for info in pkgutil.iter_modules(paths, prefix=f"{prefix}."):
            names.append(info.name)
            if info.ispkg:
                finder = info.module_finder
                if not isinstance(finder, importlib.machinery.FileFinder):
                    raise ValueError(
                        f"sub-package {info.name!r} was not found in a folder "
                        f"(finder {finder!r}); package_modules reads packages on disk"
                    )
                folders.append(
                    ([str(Path(finder.path) / info.name.rpartition(".")[2])], info.name)
                )
    return sorted(names)


def _module_file(package: str, module: str) -> Path:
    """The source file of ``module`` (a ``package.x.y`` name), found from the package
    folder."""
    root = Path(importlib.import_module(package).__path__[0])
    parts = module.split(".")[1:]
    candidate = root.joinpath(*parts)
    if (candidate / "__init__.py").is_file():
        return candidate / "__init__.py"
    if candidate.with_suffix(".py").is_file():
        return candidate.with_suffix(".py")
    raise FileNotFoundError(f"no source file for module {module!r} under {root}")


def _resolve(name: str, known: set[str]) -> str | None:
    """The longest known module that ``name`` is or lies in (``a.b.C`` -> ``a.b``), else
    ``None``."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


@dataclass(frozen=True)
class ImportEdge:
    """``source`` imports ``target``; ``lazy`` when every such import sits inside a
    function."""

    source: str
    target: str
    lazy: bool


def import_graph(package: str = "crossalign") -> list[ImportEdge]:
    """The imports between the modules of ``package``, read from their source with
    ``ast``.

    Handles ``import p.x``, ``from p.x import y`` (``y`` may itself be a module), and
    relative imports. An import inside a function body (a lazy import, often used to
    break an import cycle or to keep start-up fast) gives an edge with ``lazy=True``
    unless the same target is also imported at module level. Self-edges are dropped.
    Edges are sorted.
    """
    modules = package_modules(package)
    known = set(modules)
    found: dict[Edge, bool] = {}
    for module in modules:
        path = _module_file(package, module)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_init = path.name == "__init__.py"
        for node, lazy in _imports_with_scope(tree):
            for target in _import_targets(node, module, is_init, known):
                if target != module:
                    found[(module, target)] = found.get((module, target), True) and lazy
    return [ImportEdge(a, b, lazy) for (a, b), lazy in sorted(found.items())]


def _imports_with_scope(
    tree: ast.AST,
) -> Iterable[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement of ``tree`` with whether it sits inside a function."""
    stack: list[tuple[ast.AST, bool]] = [(tree, False)]
    while stack:
        node, in_function = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, in_function
            inner = in_function or isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
            )
            stack.append((child, inner))


def _import_targets(
    node: ast.Import | ast.ImportFrom, module: str, is_init: bool, known: set[str]
) -> list[str]:
    """The package modules one import statement reaches."""
    if isinstance(node, ast.Import):
        return [t for t in (_resolve(alias.name, known) for alias in node.names) if t]
    if node.level:
        base = module.split(".") if is_init else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        origin = ".".join([*base, node.module] if node.module else base)
    else:
        origin = node.module or ""
    targets = []
    for alias in node.names:
        target = _resolve(f"{origin}.{alias.name}", known) or _resolve(origin, known)
        if target:
            targets.append(target)
    return targets


def group_of(module: str, package: str = "crossalign") -> str:
    """The diagram node a module belongs to: its first-level sub-package or top-level
    module.

    ``crossalign.data.shapes`` -> ``data``; ``crossalign.linear`` -> ``linear``; the
    package's own ``__init__`` -> the package name.
    """
    if module == package:
        return package
    if not module.startswith(package + "."):
        raise ValueError(f"module {module!r} is not inside package {package!r}")
    return module[len(package) + 1 :].split(".")[0]


def group_by_subpackage(
    package: str = "crossalign",
) -> tuple[dict[str, list[str]], list[ImportEdge]]:
    """Fold the module graph into groups: ``{group: [module short names]}`` and
    group-level edges.

    A group edge is lazy only if every module-level import behind it is lazy; edges
    inside a group and edges into the package ``__init__`` (re-exports) are left out.
    """
    groups: dict[str, list[str]] = {}
    for module in package_modules(package):
        group = group_of(module, package)
        short = (
            module[len(package) + 1 :].split(".", 1)[1]
            if module.count(".") > 1
            else None
        )
        groups.setdefault(group, [])
        if short is not None:
            groups[group].append(short)
    lazy: dict[Edge, bool] = {}
    for edge in import_graph(package):
        a, b = group_of(edge.source, package), group_of(edge.target, package)
        if a != b and b != package:
            lazy[(a, b)] = lazy.get((a, b), True) and edge.lazy
    return groups, [
        ImportEdge(a, b, is_lazy) for (a, b), is_lazy in sorted(lazy.items())
    ]


def architecture_mermaid(package: str = "crossalign") -> str:
    """The package's architecture as a Mermaid flowchart: groups as boxes, imports as
    arrows.

    A box lists the modules of a sub-package (``data/`` with ``shapes, vocab, ...``); an
    arrow ``a --> b`` means code in ``a`` imports ``b``, dashed when only inside
    functions (lazy).
    """
    groups, edges = group_by_subpackage(package)
    labels = {}
    for group, members in groups.items():
        if members:
            labels[_node_id(group)] = f"{group}/<br/>{', '.join(members)}"
        else:
            labels[_node_id(group)] = (
                f"{group}.py" if group != package else f"{package}/__init__"
            )
    pairs = [(_node_id(e.source), _node_id(e.target)) for e in edges]
    dashed = [(_node_id(e.source), _node_id(e.target)) for e in edges if e.lazy]
    return flowchart_mermaid(labels, pairs, direction="LR", dashed=dashed)


def _node_id(group: str) -> str:
    return re.sub(r"\W", "_", group)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the Mermaid architecture diagram of a package (default ``crossalign``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) > 1:
        print("usage: python -m crossalign.architecture [package]", file=sys.stderr)
        return 2
    print(architecture_mermaid(args[0] if args else "crossalign"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
