"""Firmware manifests: the one list of what goes onto a board, read the way MicroPython's manifestfile.py does."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from cli_harness import run_cli
from park_device import build, errors, manifest
from park_device.roles import ROLES

ROOT = Path(__file__).resolve().parents[2]
FW = ROOT / "firmware"
PACKAGES = ("common", *ROLES)


def _sources(role):
    return {src.resolve() for src, _ in manifest.board_files(role)}


@pytest.mark.parametrize("role", sorted(ROLES))
def test_every_package_has_a_manifest_and_the_role_reads_protocol_common_and_itself(role):
    m = manifest.read(role)
    assert set(m.files) == {"protocol", "common", role}
    assert m.files["protocol"] == (ROOT / "protocol" / "manifest.py").resolve()
    assert all(m.files[p] == (FW / p / "manifest.py").resolve() for p in ("common", role))
    assert [e.package for e in m.entries][0] == "protocol"  # dependencies first
    dests = {e.dest for e in m.entries}
    assert "/main.py" in dests and f"/lib/{role}/app.py" in dests and "/lib/common/runtime.py" in dests
    assert all(m.metadata[n].get("version") for n in m.files)


@pytest.mark.parametrize("role", sorted(ROLES))
def test_no_host_only_or_simulator_file_is_in_any_manifest(role):
    for src, dest in manifest.board_files(role):
        rel = src.resolve().relative_to(ROOT).as_posix()
        assert rel.startswith(("protocol/", "firmware/")), rel
        assert "vmachine" not in rel and src.name != "manifest.py", rel
        assert rel not in ("protocol/cpython.py", "protocol/names.py", "protocol/bundle.py"), rel
        assert not rel.endswith("_host.py"), rel  # protocol's host halves (cose_host, messages_host, cobs_host)
        assert not (ROOT / "protocol" / "vectors") in src.parents
        other = [r for r in ROLES if r != role]
        assert not any(dest.startswith(f"/lib/{r}/") for r in other), dest


@pytest.mark.parametrize("role", sorted(ROLES))
def test_every_firmware_module_is_in_a_manifest(role):
    """firmware/ holds board code only (the simulator lives in sim/): a module left out of its manifest
    would silently not be deployed."""
    listed = _sources(role)
    for pkg in ("common", role):
        files = {p.resolve() for p in (FW / pkg).rglob("*.py")
                 if p.name != "manifest.py" and "__pycache__" not in p.parts}
        assert files - listed == set(), f"firmware/{pkg}/manifest.py leaves out {sorted(files - listed)}"


def _imported_files(src: Path, role: str) -> set[Path]:
    """Files of our packages that a module imports (absolute, relative and `from pkg import module`)."""
    roots = {"protocol": ROOT, **{p: FW for p in PACKAGES}}
    pkg_parts = src.resolve().relative_to(ROOT / "protocol" if src.is_relative_to(ROOT / "protocol") else FW).parts
    here = (["protocol"] if src.is_relative_to(ROOT / "protocol") else []) + list(pkg_parts[:-1])
    found: set[Path] = set()

    def resolve(dotted: list[str]) -> Path | None:
        if not dotted or dotted[0] not in roots:
            return None
        base = roots[dotted[0]].joinpath(*dotted)
        for cand in (base.with_suffix(".py"), base / "__init__.py"):
            if cand.is_file():
                return cand.resolve()
        return None

    tree = ast.parse(src.read_text())
    host = {id(n) for n in _host_only(tree)}
    for node in ast.walk(tree):
        if id(node) in host:
            continue
        if isinstance(node, ast.Import):
            names = [a.name.split(".") for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = (here[:len(here) - node.level + 1] if node.level else []) + (node.module or "").split(".")
            mod = [p for p in mod if p]
            names = [mod] + [mod + [a.name] for a in node.names]
        else:
            continue
        for dotted in names:
            for i in range(1, len(dotted) + 1):   # a package's __init__ runs too
                f = resolve(dotted[:i])
                if f is not None:
                    found.add(f)
    return found


def _host_only(tree: ast.AST) -> list[ast.AST]:
    """Nodes under `if sys.implementation.name != "micropython":`, which a board never runs
    (protocol's host halves, protocol/*_host.py, are imported there)."""
    out = []
    for node in ast.walk(tree):
        t = node.test if isinstance(node, ast.If) else None
        if (isinstance(t, ast.Compare) and isinstance(t.ops[0], ast.NotEq)
                and ast.unparse(t.left) == "sys.implementation.name"
                and isinstance(t.comparators[0], ast.Constant) and t.comparators[0].value == "micropython"):
            for stmt in node.body:
                out.extend(ast.walk(stmt))
    return out


@pytest.mark.parametrize("role", sorted(ROLES))
def test_the_manifest_holds_every_module_the_board_code_imports(role):
    listed = _sources(role)
    for src in sorted(listed):
        missing = sorted(str(f.relative_to(ROOT)) for f in _imported_files(src, role) - listed)
        assert not missing, f"{src.relative_to(ROOT)} imports {missing}, which firmware/{role}'s manifests leave out"
    # the runtime loads the App by name (__import__(role + ".app")): it must be there too
    assert (FW / role / "app.py").resolve() in listed and (FW / role / "__init__.py").resolve() in listed


@pytest.mark.parametrize("role", sorted(ROLES))
def test_deploy_builds_exactly_the_manifest(role):
    plan = build.sources(role)
    want = [(src, dest[:-3] + ".mpy" if dest.startswith("/lib/") else dest)
            for src, dest in manifest.board_files(role)]
    assert sorted((str(s), d) for s, d, _ in plan) == sorted((str(s), d) for s, d in want)
    assert [d for _, d, c in plan if not c] == ["/main.py"]  # MicroPython runs it by name: source
    assert plan[-1][1] == "/main.py" and plan[0][1] == "/lib/protocol/__init__.mpy"


def test_the_deployed_board_holds_exactly_the_manifest(deployed_flash):
    on_flash = {"/" + p.relative_to(deployed_flash).as_posix() for p in deployed_flash.rglob("*")
                if p.is_file() and p.suffix in (".py", ".mpy")}
    want = {d[:-3] + ".mpy" if d.startswith("/lib/") else d for _, d in manifest.board_files("light_pole")}
    assert on_flash == want


def test_frozen_manifest_freezes_the_role_packages_after_the_port(capsys):
    rc, out, err = run_cli(capsys, "manifest", "--role", "light_pole")
    assert rc == 0, err
    calls = []
    env = {"__builtins__": {}, "include": lambda p, **kw: calls.append(("include", p, None, None)),
           "package": lambda p, files=None, base_path=".", opt=None: calls.append(("package", p, files, base_path)),
           "module": lambda p, base_path=".", opt=None: calls.append(("module", p, None, base_path))}
    exec(compile(out, "board_manifest.py", "exec"), env)  # the whole output, summary included, is a manifest
    assert calls[0] == ("include", "$(PORT_DIR)/boards/manifest.py", None, None)
    frozen = {Path(base, name, f).resolve() for kind, name, files, base in calls[1:] for f in files}
    assert frozen == _sources("light_pole") - {(FW / "common" / "main.py").resolve()}
    assert [c[1] for c in calls[1:]] == ["protocol", "common", "light_pole"]
    rc, out, err = run_cli(capsys, "manifest", "--role", "light_pole", "--json")
    doc = json.loads(out)
    assert [(f["source"], f["dest"]) for f in doc["files"]] == [
        (s.relative_to(ROOT).as_posix(), d) for s, d in manifest.board_files("light_pole")]
    assert [p["name"] for p in doc["packages"]] == ["protocol", "common", "light_pole"]
    rc, out, err = run_cli(capsys, "manifest", "--role", "tram", "--json")
    assert rc == errors.UnknownRole.exit_status and json.loads(out)["error"]["code"] == "unknown_role"


def _tree(tmp_path, role_manifest: str, files=("__init__.py", "app.py")) -> Path:
    fw = tmp_path / "fw"
    (fw / "common").mkdir(parents=True)
    (fw / "common" / "__init__.py").write_text("")
    (fw / "common" / "manifest.py").write_text('metadata(version="1")\nrequire("protocol")\n'
                                               'package("common", files=("__init__.py",), base_path="..")\n')
    (fw / "locker").mkdir()
    for f in files:
        (fw / "locker" / f).write_text("X = 1\n")
    (fw / "locker" / "manifest.py").write_text(role_manifest)
    return fw


def test_a_broken_manifest_is_one_clear_error_naming_the_file(tmp_path):
    ok = ('metadata(version="1")\nrequire("common")\n'
          'package("locker", files=("__init__.py", "app.py"), base_path="..")\n')
    fw = _tree(tmp_path, ok)
    assert [d for _, d in manifest.board_files("locker", fw_root=fw)][-2:] == ["/lib/locker/__init__.py",
                                                                                 "/lib/locker/app.py"]
    cases = {
        'require("common")\npackage("locker", files=("gone.py",), base_path="..")\n': "gone.py",
        'require("comon")\n': "require('comon')",
        'require("common")\nopen("/etc/passwd")\n': "NameError",
        'require("common")\nimport os\n': "ImportError",
        'package("locker", files=("app.py",), base_path="$(MPY_DIR)")\n': "$(MPY_DIR)",
        'metadata(version="1")\nmetadata(version="2")\n': "metadata() called twice",
        'package("locker", files=(\n': "manifest.py:",
    }
    for text, what in cases.items():
        (fw / "locker" / "manifest.py").write_text(text)
        with pytest.raises(errors.ManifestError) as e:
            manifest.board_files("locker", fw_root=fw)
        assert what in e.value.message and e.value.code == "bad_manifest", (text, e.value.message)
    (fw / "locker" / "manifest.py").unlink()
    with pytest.raises(errors.ManifestError, match="manifest.py is missing"):
        build.sources("locker", fw_root=fw)
