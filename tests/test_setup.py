"""The README's two Quick start commands and what runs them: the set-up block (./setup.sh, here
with fake apt-get, sudo and python3 on PATH, so no package is installed) and the test block, which
.ci/run extracts from README.md and runs verbatim."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

SETUP_BLOCK = "./setup.sh && . .venv/bin/activate"
TEST_BLOCK = "python -m pytest -q"


def _quick_start_blocks(readme: str) -> dict[str, str]:
    """The fenced bash block after each ``<!-- name -->`` marker of the Quick start section."""
    section = readme.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"^<!-- (\w+) -->\n+```bash\n(.*?)\n```$", section, re.M | re.S))


def test_the_quick_start_has_the_set_up_and_test_blocks_and_ci_runs_exactly_them():
    blocks = _quick_start_blocks((ROOT / "README.md").read_text())
    assert blocks == {"setup": SETUP_BLOCK, "test": TEST_BLOCK}
    printed = subprocess.run(["bash", str(ROOT / ".ci" / "run"), "--print"], capture_output=True,
                             text=True, check=True, timeout=30).stdout
    assert printed == f"{SETUP_BLOCK}\n{TEST_BLOCK}\n"


def _ci_checkout(tmp_path: Path, setup: str) -> Path:
    (tmp_path / ".ci").mkdir()
    shutil.copy(ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    (tmp_path / ".venv").mkdir()  # a stale one, which CI removes first
    (tmp_path / "README.md").write_text(
        # the set-up block stands a shell function in for python, which the test command runs
        "# x\n\n## Quick start\n\n<!-- setup -->\n```bash\n"
        'python() { echo "tests ran with telemetry=$MLFLOW_DISABLE_TELEMETRY"; }\n'
        f"{setup}\n```\n\n<!-- test -->\n```bash\n{TEST_BLOCK}\n```\n")
    return tmp_path


@pytest.mark.parametrize("setup", ["false && echo activated", "false"])
def test_ci_runs_no_tests_after_a_failed_set_up(tmp_path, setup):
    out = subprocess.run(["bash", str(_ci_checkout(tmp_path, setup) / ".ci" / "run")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "tests ran" not in out.stdout
    assert not (tmp_path / ".venv").exists()


def test_ci_runs_the_test_block_in_the_set_up_blocks_shell(tmp_path):
    out = subprocess.run(["bash", str(_ci_checkout(tmp_path, "echo set up && true") / ".ci" /
                                      "run")], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "set up\ntests ran with telemetry=true\n"


FAKES = {
    # the id of a root or a plain user, as the test asks
    "id": 'echo "$FAKE_UID"',
    "apt-get": 'echo "apt-get $*" >> "$LOG"',
    "sudo": 'echo "sudo" >> "$LOG"; exec "$@"',
    # a Python of the version the test asks whose venv module makes a pip that only logs
    "python3": ('if [ "$1" = -c ]; then exit "$FAKE_OLD"; fi\n'
                '/bin/mkdir -p "$3/bin"\n'
                'printf \'#!/bin/sh\\necho "pip $*" >> "$LOG"\\n\' > "$3/bin/python"\n'
                '/bin/chmod +x "$3/bin/python"'),
}


def _setup(tmp_path: Path, *, uid: int = 0, have: tuple[str, ...] = (), old: bool = False):
    """Run a copy of setup.sh with only fakes (and dirname, env) on PATH."""
    fakes = tmp_path / "bin"
    fakes.mkdir()
    for name in ("dirname", "env"):
        (fakes / name).symlink_to(shutil.which(name))
    for name, body in FAKES.items():
        if name != "sudo" or "sudo" in have:
            (fakes / name).write_text(f"#!/bin/sh\n{body}\n")
    for name in ("chromium", "chromedriver"):
        if name in have:
            (fakes / name).write_text("#!/bin/sh\n")
    for fake in fakes.iterdir():
        if not fake.is_symlink():
            fake.chmod(0o755)
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    shutil.copy(ROOT / "setup.sh", checkout / "setup.sh")
    log = tmp_path / "log"
    log.touch()
    out = subprocess.run(["/bin/bash", str(checkout / "setup.sh")], capture_output=True,
                         text=True, timeout=30, env={"PATH": str(fakes), "LOG": str(log),
                                                     "FAKE_UID": str(uid),
                                                     "FAKE_OLD": str(int(old)), "HOME": "/"})
    return out, log.read_text().splitlines()


PIP = "pip -m pip install -e .[dev]"
APT = ["apt-get update -qq", "apt-get install -y -qq --no-install-recommends chromium "
       "chromium-driver"]


def test_setup_as_root_installs_the_browser_with_apt_get_then_the_project(tmp_path):
    out, log = _setup(tmp_path)
    assert out.returncode == 0, out.stderr
    assert log == [*APT, PIP]
    assert (tmp_path / "checkout" / ".venv" / "bin" / "python").is_file()


def test_setup_as_a_user_with_sudo_installs_the_browser_through_sudo(tmp_path):
    out, log = _setup(tmp_path, uid=1000, have=("sudo",))
    assert out.returncode == 0, out.stderr
    assert log == ["sudo", APT[0], "sudo", APT[1], PIP]


def test_setup_with_the_browser_there_installs_only_the_project(tmp_path):
    out, log = _setup(tmp_path, uid=1000, have=("chromium", "chromedriver"))
    assert out.returncode == 0, out.stderr
    assert log == [PIP]


def test_setup_without_root_or_sudo_says_what_to_run_before_any_work(tmp_path):
    out, log = _setup(tmp_path, uid=1000, have=("chromium",))
    assert out.returncode == 2 and log == []
    assert out.stderr.count("\n") == 1
    assert "as root, run apt-get install chromium chromium-driver, then ./setup.sh" in out.stderr
    assert not (tmp_path / "checkout" / ".venv").exists()


def test_setup_with_an_old_python_names_the_one_to_install(tmp_path):
    out, log = _setup(tmp_path, old=True)
    assert out.returncode == 2 and log == []
    assert "needs Python 3.11 or newer" in out.stderr and "PYTHON=python3.11" in out.stderr


def test_the_set_up_and_ci_scripts_are_executable():
    assert os.access(ROOT / "setup.sh", os.X_OK) and os.access(ROOT / ".ci" / "run", os.X_OK)


def test_ci_refuses_a_readme_whose_test_block_is_not_its_test_command(tmp_path):
    checkout = _ci_checkout(tmp_path, "true")
    readme = checkout / "README.md"
    readme.write_text(readme.read_text().replace(TEST_BLOCK, "python -m pytest -q -m 'not slow'"))
    out = subprocess.run(["bash", str(checkout / ".ci" / "run")], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 2 and "make them agree" in out.stderr
