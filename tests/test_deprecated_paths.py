"""Old module paths (issue 34, item 4) still work for one release, and robustsnn never uses them.

Each old path is a small alias module: importing it emits a DeprecationWarning that names the new
path, attributed to the importing line, and its names are the very objects of the new modules.
``robustsnn.conversion`` is not here: it became the package ``robustsnn/conversion/``, whose
``__init__`` re-exports the converter, so that path is the current one.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import robustsnn

# old path -> {new module: the names the old module offered that now live there}
OLD_PATHS: dict[str, dict[str, list[str]]] = {
    "robustsnn.checkpoint": {
        "robustsnn.io.checkpoint": [
            "FORMAT_VERSION",
            "PATH_DATASETS",
            "RELATIVE_SPEC_KEY",
            "load_state_into",
            "load_tensors",
            "metadata_path",
            "resolve_dataset",
            "save_tensors",
            "with_relative_dataset",
        ],
        "robustsnn.io.atomic": ["atomic_write_bytes", "atomic_write_json", "atomic_write_text"],
    },
    "robustsnn.modelio": {
        "robustsnn.io.models": [
            "ARCH_BUILDERS",
            "BODY_TRANSFORMS",
            "build_snn_from_metadata",
            "check_input",
            "expected_input",
            "load_model",
            "save_ann",
            "save_snn",
            "snn_metadata",
        ],
    },
    "robustsnn.model_formats": {
        "robustsnn.io.formats": [
            "ARCH_BUILDERS",
            "BODY_TRANSFORMS",
            "ArchBuilder",
            "BodyTransform",
            "register_arch_builder",
            "register_body_transform",
        ],
    },
    "robustsnn.io_lock": {
        "robustsnn.io.folder_lock": [
            "LOCK_FILE",
            "SETTINGS_FILE",
            "FolderLock",
            "claim",
            "settings_conflict",
        ],
    },
    "robustsnn.adapters": {
        "robustsnn.interop.adapters": [
            "READOUTS",
            "AdapterInfo",
            "from_snntorch",
            "from_spikingjelly",
        ],
        "robustsnn.interop.stepwise": ["SourceSurrogate", "WrappedNetwork", "wrap"],
    },
    "robustsnn.reference_sim": {
        "robustsnn.snn.reference": [
            "Simulation",
            "conv2d",
            "is_random_network",
            "pool2d",
            "simulate_network",
            "simulate_nir",
            "trace_network",
        ],
    },
}

# switched to the new paths separately (issue 34): not held to the no-warning rule yet
NOT_YET_CHECKED = "robustsnn.analysis"


def _fresh_import(name: str) -> tuple[object, list[warnings.WarningMessage]]:
    """Import ``name`` anew (its warning is emitted once per import), recording warnings."""
    sys.modules.pop(name, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        __import__(name)  # the import statement's machinery: the warning points at this line
    return sys.modules[name], caught


@pytest.mark.parametrize("old", sorted(OLD_PATHS))
def test_old_path_warns_and_names_the_new_path(old: str) -> None:
    _, caught = _fresh_import(old)
    deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert len(deprecations) == 1, [str(w.message) for w in caught]
    message = str(deprecations[0].message)
    assert old in message and "will be removed in the next release" in message, message
    for new in OLD_PATHS[old]:
        assert new in message, message
    assert deprecations[0].filename == __file__  # stacklevel=2: the importer, not the alias


@pytest.mark.parametrize("old", sorted(OLD_PATHS))
def test_old_path_offers_the_same_objects(old: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        alias = importlib.import_module(old)
    offered = sorted(getattr(alias, "__all__", []))
    assert offered == sorted(n for names in OLD_PATHS[old].values() for n in names)
    for new, names in OLD_PATHS[old].items():
        module = importlib.import_module(new)
        for name in names:
            assert getattr(alias, name) is getattr(module, name), f"{old}.{name}"


def _robustsnn_modules() -> list[str]:
    """Every robustsnn module except the aliases and the packages not switched yet."""
    found = [
        info.name
        for info in pkgutil.walk_packages(robustsnn.__path__, "robustsnn.", onerror=lambda _: None)
    ]
    return sorted(
        name
        for name in {"robustsnn", *found}
        if name not in OLD_PATHS
        and name != NOT_YET_CHECKED
        and not name.startswith(NOT_YET_CHECKED + ".")
    )


def test_robustsnn_itself_uses_no_old_path() -> None:
    """A fresh interpreter imports every module with DeprecationWarning as an error; none of
    the aliases may have been imported by any of them."""
    names = _robustsnn_modules()
    assert "robustsnn.io.models" in names and "robustsnn.conversion.converter" in names
    code = (
        "import importlib, json, sys, warnings\n"
        "warnings.simplefilter('error', DeprecationWarning)\n"
        f"for name in json.loads({json.dumps(json.dumps(names))}):\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(set(json.loads({json.dumps(json.dumps(sorted(OLD_PATHS)))}))"
        " & set(sys.modules))))\n"
    )
    src = Path(robustsnn.__file__).resolve().parents[1]
    env = {"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
