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
