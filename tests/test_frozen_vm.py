"""sim.mpvm.frozen: the builder of the virtual boards' VM with a role's firmware frozen in. The build
itself needs a MicroPython source tree and Emscripten (a benchmark's step, docs/firmware.md#footprint);
these tests hold what it decides without them."""
from __future__ import annotations

import pytest

from park_device import manifest
from sim.mpvm import frozen


def test_the_webassembly_manifest_freezes_the_role_after_the_pyscript_variant():
    calls = []
    env = {"__builtins__": {}, "include": lambda p, **kw: calls.append(("include", p)),
           "package": lambda p, files=None, base_path=".", opt=None: calls.append(("package", p)),
           "module": lambda p, base_path=".", opt=None: calls.append(("module", p))}
    exec(compile(manifest.frozen_manifest("locker", port="webassembly"), "m.py", "exec"), env)
    assert calls == [("include", "$(PORT_DIR)/variants/pyscript/manifest.py"),
                     ("package", "protocol"), ("package", "common"), ("package", "locker")]
    assert "$(PORT_DIR)/boards/manifest.py" in manifest.frozen_manifest("locker")  # the ESP32 default stays


def test_a_tree_that_is_not_micropython_is_refused_with_what_is_missing(tmp_path):
    with pytest.raises(frozen.FrozenBuildError, match="not a MicroPython source tree"):
        frozen.build(tmp_path, tmp_path / "out")
    (tmp_path / "ports" / "webassembly").mkdir(parents=True)
    (tmp_path / "ports" / "webassembly" / "Makefile").write_text("")
    (tmp_path / "mpy-cross").mkdir()
    with pytest.raises(frozen.FrozenBuildError, match="micropython-lib is empty"):
        frozen.build(tmp_path, tmp_path / "out")
    with pytest.raises(frozen.FrozenBuildError, match="no frozen VM for light_pole"):
        frozen.vm_for(tmp_path / "out", "light_pole")


def test_old_emscripten_output_gets_the_node_prelude_once(tmp_path):
    mjs = tmp_path / "micropython.mjs"
    mjs.write_text("var _createMicroPythonModule = 1;\n")
    frozen._fix_module(mjs)
    frozen._fix_module(mjs)
    text = mjs.read_text()
    assert text.count("createRequire") == 1 and text.endswith("var _createMicroPythonModule = 1;\n")
    lib = tmp_path / "library.js"
    lib.write_text("    mp_js_time_ms: () => Date.now(),\n")
    frozen._fix_library(tmp_path)
    assert lib.read_text() == "    mp_js_time_ms: function() { return Date.now(); },\n"
