"""The scripts' status codes have one definition (``codes.Status``), which the Lua prelude is
generated from: every code a script uses is defined there, and the prelude defines each one
with its value."""

from __future__ import annotations

import re
from importlib import resources

from controllers.keystore.codes import Status, lua_prelude
from controllers.keystore.scripts import Scripts, prelude, source


def test_every_status_name_a_script_uses_is_defined_in_python() -> None:
    scripts = [f"{name}.lua" for name in Scripts.__dataclass_fields__] + ["common.lua"]
    used = {name for script in scripts for name in re.findall(r"\bE_[A-Z_]+\b", source(script))}
    assert used
    assert used <= {s.name for s in Status}


def test_the_prelude_defines_each_code_with_its_value() -> None:
    defined = dict(re.findall(r"^local (\w+) = (-?\d+)$", lua_prelude(), flags=re.M))
    assert {k: int(v) for k, v in defined.items()} == {s.name: s.value for s in Status}
    assert prelude().startswith(lua_prelude())


def test_no_script_defines_a_code_of_its_own() -> None:
    package = resources.files("controllers.keystore")
    for entry in package.iterdir():
        if entry.name.endswith(".lua"):
            text = entry.read_text(encoding="utf-8")
            assert not re.search(r"^local (OK|E_[A-Z_]+) =", text, flags=re.M), entry.name


def test_every_lua_file_is_a_loaded_script_or_the_prelude() -> None:
    package = resources.files("controllers.keystore")
    files = {e.name for e in package.iterdir() if e.name.endswith(".lua")}
    assert files == {f"{n}.lua" for n in Scripts.__dataclass_fields__} | {"common.lua"}
