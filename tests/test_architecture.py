"""Graph utilities and the package's import graph, checked against hand-built graphs and
packages."""

from __future__ import annotations

import importlib
import itertools
import sys
from pathlib import Path

import pytest

from crossalign.architecture import (
    CycleError,
    ImportEdge,
    architecture_mermaid,
    find_cycle,
    flowchart_mermaid,
    group_by_subpackage,
    group_of,
    import_graph,
    package_modules,
    parse_mermaid_edges,
    topological_order,
)

SEED_GRAPH = """
graph TD
    A[数据预处理] --> B[特征提取]
    C[模态融合] --> B
    B --> C
    C --> D[对齐算法应用]
    D --> E[模型训练]
    E --> F[模型评估]
"""


def test_parse_seed_flowchart():
    chart = parse_mermaid_edges(SEED_GRAPH)
    assert chart.direction == "TD"
    assert chart.edges == [
        ("A", "B"),
        ("C", "B"),
        ("B", "C"),
        ("C", "D"),
        ("D", "E"),
        ("E", "F"),
    ]
    assert chart.labels == {
        "A": "数据预处理",
        "B": "特征提取",
        "C": "模态融合",
        "D": "对齐算法应用",
        "E": "模型训练",
        "F": "模型评估",
    }


def test_parse_edge_texts_comments_and_arrow_kinds():
    chart = parse_mermaid_edges(
        'flowchart LR\n  %% a comment\n  x["in put"] -->|yes| y\n  y -.-> z[Z]\n  z '
        "==> x"
    )
    assert chart.direction == "LR"
    assert chart.edges == [("x", "y"), ("y", "z"), ("z", "x")]
    assert chart.labels == {"x": "in put", "y": "y", "z": "Z"}


@pytest.mark.parametrize(
    "text, where",
    [("", "empty"), ("A --> B", "line 1"), ("graph TD\n  A -> B", "line 2")],
)
def test_parse_rejects_bad_lines_naming_them(text, where):
    with pytest.raises(ValueError, match=where):
        parse_mermaid_edges(text)


def test_seed_graph_cycle_is_fusion_and_extraction():
    edges = parse_mermaid_edges(SEED_GRAPH).edges
    assert find_cycle(edges) == ["B", "C"]
    with pytest.raises(CycleError, match="B --> C --> B") as info:
        topological_order(edges)
    assert info.value.cycle == ["B", "C"]


def _is_topological(order, edges):
    position = {node: i for i, node in enumerate(order)}
    return all(position[a] < position[b] for a, b in edges)


def _has_cycle_brute_force(nodes, edges):
    """A graph is acyclic iff some permutation of its nodes puts every edge forward."""
    return not any(_is_topological(p, edges) for p in itertools.permutations(nodes))


def test_topological_order_and_find_cycle_agree_with_brute_force_on_all_small_graphs():
    nodes = ["a", "b", "c", "d"]
    pairs = [(x, y) for x in nodes for y in nodes if x != y]
    for mask in range(1 << len(pairs)):  # all 4,096 directed graphs on 4 labelled nodes
        edges = [pair for bit, pair in enumerate(pairs) if mask >> bit & 1]
        cyclic = _has_cycle_brute_force(nodes, edges)
        cycle = find_cycle(edges)
        assert (cycle is not None) == cyclic, edges
        if cycle:  # the cycle is real: consecutive nodes (and last -> first) are edges
            assert all(
                (cycle[i], cycle[(i + 1) % len(cycle)]) in edges
                for i in range(len(cycle))
            )
            with pytest.raises(CycleError):
                topological_order(edges, nodes)
        else:
            order = topological_order(edges, nodes)
            assert sorted(order) == nodes and _is_topological(order, edges)


def test_topological_order_is_stable_and_handles_self_loops():
    assert topological_order([("b", "c")], nodes=["a", "b", "c"]) == ["a", "b", "c"]
    assert topological_order([("x", "z"), ("y", "z")]) == ["x", "y", "z"]
    assert find_cycle([("a", "a")]) == ["a"]


def test_flowchart_mermaid_round_trips_through_the_parser():
    labels = {"A": "data", "B": "features", "C": "loss"}
    text = flowchart_mermaid(labels, [("A", "B"), ("B", "C")], dashed=[("B", "C")])
    assert "B -.-> C" in text
    chart = parse_mermaid_edges(text)
    assert chart.labels == labels and chart.edges == [("A", "B"), ("B", "C")]
    with pytest.raises(ValueError, match="without a label"):
        flowchart_mermaid({"A": "a"}, [("A", "B")])


@pytest.fixture
def toy_package(tmp_path, monkeypatch):
    """A package with sub-packages, absolute, relative and lazy imports, and a
    re-export."""
    files = {
        "toypkg/__init__.py": "from toypkg.util import helper\n",
        "toypkg/util.py": "import os\n\ndef helper():\n    return os.sep\n",
        "toypkg/data/__init__.py": "from .reader import read\n",
        "toypkg/data/reader.py": (
            "from ..util import helper\nfrom toypkg import util\n\n"
            "def read():\n    return helper()\n"
        ),
        "toypkg/models/__init__.py": "",
        "toypkg/models/net.py": (
            "import toypkg.data.reader\nfrom toypkg.data import read\n\n"
            "def build():\n    from toypkg.cli import main\n    return main\n"
        ),
        "toypkg/cli.py": (
            "def main():\n    from toypkg.models import net\n"
            "    import toypkg.util\n    return net\n"
        ),
    }
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield "toypkg"
    for name in [m for m in sys.modules if m == "toypkg" or m.startswith("toypkg.")]:
        del sys.modules[name]


def test_package_modules_lists_every_module(toy_package):
    assert package_modules(toy_package) == [
        "toypkg",
        "toypkg.cli",
        "toypkg.data",
        "toypkg.data.reader",
        "toypkg.models",
        "toypkg.models.net",
        "toypkg.util",
    ]


def test_import_graph_resolves_absolute_relative_and_lazy_imports(toy_package):
    assert import_graph(toy_package) == [
        ImportEdge("toypkg", "toypkg.util", False),
        ImportEdge("toypkg.cli", "toypkg.models.net", True),
        ImportEdge("toypkg.cli", "toypkg.util", True),
        ImportEdge("toypkg.data", "toypkg.data.reader", False),
        ImportEdge("toypkg.data.reader", "toypkg.util", False),
        ImportEdge("toypkg.models.net", "toypkg.cli", True),
        ImportEdge("toypkg.models.net", "toypkg.data", False),
        ImportEdge("toypkg.models.net", "toypkg.data.reader", False),
    ]


def test_grouping_and_diagram_of_toy_package(toy_package):
    groups, edges = group_by_subpackage(toy_package)
    assert groups == {
        "toypkg": [],
        "cli": [],
        "data": ["reader"],
        "models": ["net"],
        "util": [],
    }
    assert edges == [
        ImportEdge("cli", "models", True),
        ImportEdge("cli", "util", True),
        ImportEdge("data", "util", False),
        ImportEdge("models", "cli", True),
        ImportEdge("models", "data", False),
        ImportEdge("toypkg", "util", False),
    ]
    chart = parse_mermaid_edges(architecture_mermaid(toy_package))
    assert set(chart.edges) == {(e.source, e.target) for e in edges}
    assert chart.labels["data"] == "data/<br/>reader"
    assert find_cycle([(e.source, e.target) for e in edges if not e.lazy]) is None


def test_group_of_rejects_foreign_modules():
    assert group_of("crossalign.data.shapes") == "data"
    assert group_of("crossalign.linear") == "linear"
    with pytest.raises(ValueError, match="not inside"):
        group_of("torch.nn")


def test_crossalign_diagram_covers_every_module_file():
    root = Path(importlib.import_module("crossalign").__path__[0])

    # every folder up to the root has an __init__.py
    def in_regular_package(
        path: Path,
    ) -> bool:
        return all(
            (folder / "__init__.py").is_file()
            for folder in path.parents
            if folder.is_relative_to(root)
        )

    on_disk = {
        ".".join(
            ("crossalign", *p.relative_to(root).with_suffix("").parts)
        ).removesuffix(".__init__")
        for p in root.rglob("*.py")
        if in_regular_package(p)
    }
    assert set(package_modules()) == on_disk
    text = architecture_mermaid()
    for module in on_disk - {"crossalign"}:
        assert module.split(".")[-1] in text, module
    top_level = [(e.source, e.target) for e in group_by_subpackage()[1] if not e.lazy]
    # module-level imports between sub-packages form a DAG
    assert find_cycle(top_level) is None
