"""bitfit as users get it: a wheel built from the checkout, installed (not editable) into a fresh
virtualenv and used from outside the checkout.

Offline and without installing any dependency again: the wheel is built with the setuptools of
this environment (no build isolation), and the new virtualenv sees this environment's
site-packages through a .pth file. That also brings this environment's own bitfit (usually the
editable install) along, so every check says where bitfit was imported from.
"""

from __future__ import annotations

import ast
import email
import os
import re
import shutil
import site
import subprocess
import sys
import venv
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# What a build reads; the rest of the checkout (.venv/, runs/, ...) stays out of the copy.
SOURCES = ("pyproject.toml", "README.md", "MANIFEST.in", "LICENSE", "bitfit", "search_spaces")
SPACES = sorted(p.name for p in (ROOT / "search_spaces").glob("*.yaml"))


def _run(args: list[str | Path], cwd: Path, timeout: float = 120) -> str:
    """Run a command outside the checkout, without this shell's PYTHONPATH or user site; its
    stdout, or a failure that shows both outputs."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")}
    env.update(PYTHONNOUSERSITE="1", PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               PIP_NO_INPUT="1")
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)
    assert done.returncode == 0, (f"{' '.join(map(str, args))} exited {done.returncode}\n"
                                  f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}")
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the checkout so that no build/ or egg-info lands in it."""
    tmp = tmp_path_factory.mktemp("build")
    src = tmp / "src"
    src.mkdir()
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=skip)
        elif path.is_file():
            shutil.copy2(path, src / name)
    # setuptools>=77 comes with the dev extra; PIP_NO_INDEX keeps this offline
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
          "-w", tmp / "dist", src], cwd=tmp)
    (built,) = (tmp / "dist").glob("bitfit-*.whl")
    return built


def _imported(root: Path) -> set[str]:
    """The top-level names that the modules under ``root`` import (at the top or inside a
    function), less the standard library and the folder's own modules."""
    names: set[str] = set()
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(a.name.partition(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.partition(".")[0])
    local = {p.stem for p in root.glob("*.py")}
    return names - set(sys.stdlib_module_names) - local - {"__future__"}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_wheel_ships_the_spaces_and_declares_what_bitfit_imports(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as whl:
        files = whl.namelist()
        (meta,) = (n for n in files if n.endswith(".dist-info/METADATA"))
        metadata = email.message_from_bytes(whl.read(meta))
        licence = whl.read(next(n for n in files if n.endswith(".dist-info/licenses/LICENSE")))

    # the package's licence, whole: Apache-2.0's terms and its appendix
    assert metadata["License-Expression"] == "Apache-2.0"
    assert b"Version 2.0, January 2004" in licence and b"END OF TERMS AND CONDITIONS" in licence

    shipped = sorted(n.removeprefix("bitfit/search_spaces/") for n in files
                     if n.startswith("bitfit/search_spaces/"))
    assert SPACES and shipped == SPACES
    assert {n.partition("/")[0] for n in files} == {"bitfit", meta.partition("/")[0]}
    # [tool.setuptools] packages is a list: a new subpackage has to be added to it
    modules = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "bitfit").rglob("*.py")
                     if "__pycache__" not in p.parts)
    assert sorted(n for n in files if n.endswith(".py")) == modules
    declared = {_canonical(re.split(r"[\s;<>=!~\[(]", r, maxsplit=1)[0])
                for r in metadata.get_all("Requires-Dist", []) if "extra ==" not in r}
    providers = packages_distributions()
    imported = _imported(ROOT / "bitfit") | _imported(ROOT / "flows")
    undeclared = {name: providers.get(name) for name in sorted(imported - {"bitfit"})
                  if not {_canonical(d) for d in providers.get(name, [])} & declared}
    assert not undeclared, f"imported but not in [project] dependencies: {undeclared}"


@pytest.mark.slow
def test_the_installed_wheel_works_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=os.name != "nt").create(env)
    python = env / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    script = env / ("Scripts/bitfit.exe" if os.name == "nt" else "bin/bitfit")
    away = tmp_path / "elsewhere"
    away.mkdir()
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                        cwd=away).strip())
    # This environment's pip installs into the new one; the dependencies are already here.
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", wheel],
         cwd=away)
    # Only now let the new environment see this one's site-packages, .pth files included (so the
    # editable finder of this environment's bitfit is there as well): pip above never saw them.
    lines = [f"import site; site.addsitedir({str(p)!r})\n" for p in site.getsitepackages()]
    (purelib / "zz_dependencies.pth").write_text("".join(lines), encoding="utf-8")

    assert "usage:" in _run([script, "train", "--help"], cwd=away)
    for command in ("search", "evaluate", "prepare"):
        assert "--data-dir" in _run([script, command, "--help"], cwd=away)
    out = _run([python, "-c", "import bitfit, bitfit.space as s; q = s.load_space('quick')\n"
                "print(q.name, q.n_trials); print(bitfit.__file__)\n"
                "print(s.resolve_space_path('quick'))"], cwd=away)
    loaded, module, quick = out.splitlines()
    trials = yaml.safe_load((ROOT / "search_spaces" / "quick.yaml").read_text())["n_trials"]
    assert loaded == f"quick {trials}"
    installed = purelib.resolve() / "bitfit"
    assert Path(module).resolve() == installed / "__init__.py", f"bitfit came from {module}"
    assert Path(quick).resolve() == installed / "search_spaces" / "quick.yaml"
    assert not Path(module).resolve().is_relative_to(ROOT.resolve())

    # Where bitfit comes from when the wheel's copy is out of the way: this environment's
    # (ROOT with an editable install) or none, never the new venv, so the checks above can fail.
    shadowed = _run([python, "-c", f"import sys; sys.path.remove({str(purelib)!r})\n"
                     "try:\n    import bitfit; print(bitfit.__file__)\n"
                     "except ImportError:\n    print('none')"], cwd=away).strip()
    assert shadowed == "none" or not Path(shadowed).resolve().is_relative_to(env.resolve())
