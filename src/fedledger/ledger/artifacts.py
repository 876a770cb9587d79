"""The task contracts: compiled from Python, shipped as checked-in artifacts.

The Vyper sources live in the repository's ``contracts/`` directory and import snekmate's
modules (``from snekmate.tokens import erc20``), found in the installed snekmate package.
:func:`compile_contract` compiles one of them with vyper's Python API; the results are checked
in as ``fedledger/ledger/build/<Name>.json`` so that nodes need neither the compiler nor the
sources at run time (:func:`load_artifact`). ``python -m fedledger.ledger.artifacts`` rebuilds
the artifacts; tests/ledger/test_contract_build.py fails when they no longer match the sources.

An artifact holds the ABI, the deployment and runtime bytecode, the vyper version, the sha256
of the contract's own source and vyper's integrity sum (a hash over the source and every module
it imports, snekmate's included).

The contract's numbering and the hashes it checks live in :mod:`fedledger.ledger.rules`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Final

CONTRACT_NAMES: Final = ("RewardToken", "Task", "Timelock", "Governor", "ModelNFT")

#: The repository's contracts/ directory (present in a source checkout, not in a wheel).
CONTRACTS_DIR: Final = Path(__file__).resolve().parents[3] / "contracts"
#: Where the artifacts are written (inside the package, shipped as package data).
BUILD_DIR: Final = Path(__file__).resolve().parent / "build"


def _check_name(name: str) -> None:
    if name not in CONTRACT_NAMES:
        raise ValueError(f"unknown contract {name!r}: expected one of {CONTRACT_NAMES}")


def source_path(name: str, contracts_dir: Path | None = None) -> Path:
    """The Vyper source file of contract ``name``."""
    _check_name(name)
    return (contracts_dir or CONTRACTS_DIR) / f"{name}.vy"


def _snekmate_root() -> Path:
    """The directory that holds the ``snekmate`` package (its site-packages)."""
    spec = importlib.util.find_spec("snekmate")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("snekmate is not installed: the contracts import its Vyper modules")
    return Path(next(iter(spec.submodule_search_locations))).resolve().parent


def compile_contract(name: str, contracts_dir: Path | None = None) -> dict[str, Any]:
    """Compile contract ``name`` from its source; returns the artifact (see module docstring).

    The keys: ``contract_name``, ``vyper_version``, ``source_sha256``, ``integrity``,
    ``abi``, ``bytecode`` and ``bytecode_runtime`` (both ``0x``-prefixed hex).
    """
    import vyper
    from vyper.compiler.input_bundle import FilesystemInputBundle

    path = source_path(name, contracts_dir)
    raw = path.read_bytes()
    # Search order: vyper gives the last path the highest precedence.
    bundle = FilesystemInputBundle([_snekmate_root(), path.parent.resolve()])
    out = vyper.compile_code(
        raw.decode("utf-8"),
        # A fixed, relative name: the output must not depend on where the checkout is.
        contract_path=f"contracts/{name}.vy",
        resolved_path=path.resolve(),
        input_bundle=bundle,
        output_formats=["abi", "bytecode", "bytecode_runtime", "integrity"],
    )
    return {
        "contract_name": name,
        "vyper_version": vyper.__version__,
        "source_sha256": hashlib.sha256(raw).hexdigest(),
        "integrity": out["integrity"],
        "abi": out["abi"],
        "bytecode": out["bytecode"],
        "bytecode_runtime": out["bytecode_runtime"],
    }


def load_artifact(name: str) -> dict[str, Any]:
    """The checked-in artifact of contract ``name`` (no compiler needed)."""
    _check_name(name)
    text = resources.files("fedledger.ledger").joinpath("build", f"{name}.json").read_text()
    artifact: dict[str, Any] = json.loads(text)
    return artifact


def artifact_json(artifact: dict[str, Any]) -> str:
    """The canonical text of an artifact file (stable, so rebuilds give no spurious diffs)."""
    return json.dumps(artifact, indent=2, sort_keys=True) + "\n"


def build_artifacts(contracts_dir: Path | None = None, build_dir: Path | None = None) -> list[Path]:
    """Compile every contract and write its artifact; returns the files written."""
    out_dir = build_dir or BUILD_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in CONTRACT_NAMES:
        target = out_dir / f"{name}.json"
        target.write_text(artifact_json(compile_contract(name, contracts_dir)))
        written.append(target)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Rebuild the artifacts: ``python -m fedledger.ledger.artifacts``."""
    del argv
    for path in build_artifacts():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
