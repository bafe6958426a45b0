from __future__ import annotations

import os

import pytest

from bitfit.services import (ServiceError, check_storage, mask_url, move_secrets,
                             refuse_secrets, split_password)


@pytest.mark.parametrize("url, masked", [
    ("postgresql://bob:s3cret@db:5432/optuna", "postgresql://bob:***@db:5432/optuna"),
    ("postgresql://bob@db/optuna?password=s3cret&sslmode=require",
     "postgresql://bob@db/optuna?password=***&sslmode=require"),
    ("https://user:pw@mlflow.example/?token=abc", "https://user:***@mlflow.example/?token=***"),
    ("sqlite:////abs/path/optuna.db", "sqlite:////abs/path/optuna.db"),
    ("sqlite:///runs/optuna.db", "sqlite:///runs/optuna.db"),
])
def test_every_url_form_is_masked_and_the_rest_kept_verbatim(url, masked):
    assert mask_url(url) == masked


def test_a_password_is_split_off_whichever_way_it_is_written():
    assert split_password("postgresql://bob:p%40ss@db/o") == ("postgresql://bob@db/o", "p%40ss")
    assert split_password("postgresql://bob@db/o?password=x&sslmode=require") == (
        "postgresql://bob@db/o?sslmode=require", "x")
    assert split_password("sqlite:////a/b.db") == ("sqlite:////a/b.db", None)


def test_secrets_move_from_the_urls_into_the_clients_environment(monkeypatch):
    for key in ("PGPASSWORD", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(key, raising=False)

    storage, tracking = move_secrets("postgresql://bob:pw1@db/o", "http://ann:pw2@ml:5000")

    assert (storage, tracking) == ("postgresql://bob@db/o", "http://ml:5000")
    assert os.environ["PGPASSWORD"] == "pw1"
    assert (os.environ["MLFLOW_TRACKING_USERNAME"],
            os.environ["MLFLOW_TRACKING_PASSWORD"]) == ("ann", "pw2")


def test_a_flow_given_a_url_with_a_password_refuses_it_without_repeating_it():
    with pytest.raises(ServiceError, match="PGPASSWORD") as caught:
        refuse_secrets(storage="postgresql://bob:hunter2@db/o", tracking_uri=None)
    assert "hunter2" not in str(caught.value)


def test_a_storage_that_sqlalchemy_cannot_open_is_named_with_the_fix():
    with pytest.raises(ServiceError, match="write postgresql://"):
        check_storage("postgres://bob@db/o")
    with pytest.raises(ServiceError, match="not a database URL"):
        check_storage("nonsense")


def test_a_write_that_collides_with_another_workers_is_tried_again_and_a_lasting_error_raised():
    # Two workers ending one shared study run insert the same tag row at once; the store
    # refuses the second (measured on PostgreSQL: BAD_REQUEST, duplicate key "tag_pk").
    from mlflow.exceptions import MlflowException

    from bitfit.tracking import _shared

    calls = []

    def collides_once(run_id, key, value):
        calls.append((run_id, key, value))
        if len(calls) == 1:
            raise MlflowException('duplicate key value violates unique constraint "tag_pk"')
        return "written"

    assert _shared(collides_once, "run", "note", "text") == "written"
    assert calls == [("run", "note", "text")] * 2

    def always_fails(run_id):
        calls.append(run_id)
        raise MlflowException("the run is gone")

    calls.clear()
    with pytest.raises(MlflowException, match="the run is gone"):
        _shared(always_fails, "run", attempts=2)
    assert calls == ["run", "run"]
