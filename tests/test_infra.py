"""The container stack's compose file: loopback ports, no secrets, every engine present."""

from __future__ import annotations

import re

import yaml

from tests.conftest import ROOT

COMPOSE = ROOT / "infra" / "docker-compose.yml"


def test_compose_binds_loopback_and_takes_credentials_from_the_env_file():
    text = COMPOSE.read_text()
    compose = yaml.safe_load(text)
    services = compose["services"]
    assert {"postgres", "mlflow", "prefect-server", "deploy", "worker"} <= set(services)
    ports = [p for s in services.values() for p in s.get("ports", [])]
    assert ports and all(p.startswith("127.0.0.1:") for p in ports)
    # the password appears only as a reference to the env file's variable
    assert re.findall(r"POSTGRES_PASSWORD\S*", text) and "change-me" not in text
    for line in text.splitlines():  # a password inside a URL is a reference too
        plain = re.sub(r"\$\{[^}]*\}", "VAR", line)
        assert all(p == "VAR" for p in re.findall(r"://[^@\s/:]+:([^@\s]+)@", plain)), line
    example = dict(line.split("=", 1) for line in
                   (ROOT / "infra" / "bitfit.env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    used = set(re.findall(r"\$\{(\w+)", text))
    assert used <= set(example), used - set(example)


def test_every_deployment_points_at_a_flow():
    config = yaml.safe_load((ROOT / "infra" / "prefect.yaml").read_text())
    for deployment in config["deployments"]:
        path, function = deployment["entrypoint"].split(":")
        source = (ROOT / path).read_text()
        assert re.search(rf"^def {function}\(", source, re.M), deployment["entrypoint"]
        assert deployment["work_pool"]["name"] == "bitfit"


def _interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR:-default}`` and ``${VAR}`` with ``env`` (an empty value is unset)."""
    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}",
                  lambda m: env.get(m.group(1)) or (m.group(2) or ""), text)


def test_the_workers_mount_a_glue_folder_only_where_the_env_file_names_one():
    compose = yaml.safe_load(COMPOSE.read_text())
    worker = compose["services"]["worker"]
    example = dict(line.split("=", 1) for line in
                   (ROOT / "infra" / "bitfit.env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    glue = next(v for v in worker["volumes"] if v.endswith(":/data/glue:ro"))
    source = glue.removesuffix(":/data/glue:ro")

    assert worker["environment"]["BITFIT_GLUE_DIR"] == "/data/glue"
    # as shipped, no local data: an empty named volume there, which bitfit reads as the Hub
    # (tests/test_data.py: an empty $BITFIT_GLUE_DIR folder)
    unset = _interpolate(source, example)
    assert example["GLUE_DIR"] == "" and unset in compose["volumes"]
    # a GLUE folder named in infra/.env is mounted instead (a path, relative to infra/)
    assert _interpolate(source, {**example, "GLUE_DIR": "../../shared/data/glue"}) == (
        "../../shared/data/glue")
