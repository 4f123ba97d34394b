"""The registry history across a model rename and a version deletion, through the real MLflow client
(client mode 1) and the history API."""
from __future__ import annotations

import uuid

import pytest
from mlflow import MlflowClient


def events_of(server, name: str, version: str | None = None) -> list[tuple]:
    params = {"name": name, **({"version": version} if version else {})}
    kind = "model-versions" if version else "registered-models"
    r = server.api("GET", f"/api/2.0/mlflow/brickyard/{kind}/history", params=params)
    assert r.status_code == 200, r.text
    out = []
    for e in r.json()["events"]:
        assert e["name"] == name
        out.append((e["kind"], e.get("version"), e.get("alias"), e.get("from_stage", e.get("from_version")),
                    e.get("to_stage", e.get("to_version")), e["user_name"]))
    return out


@pytest.fixture(scope="module")
def carol(server):
    """A non-admin user, so that each event's author is checked."""
    _, token = server.new_user("mlflow-carol@example.com")
    return "mlflow-carol@example.com", token


@pytest.fixture
def client(server, monkeypatch):
    """MLflow's client for `server`; `as_user(token)` switches the token it sends."""
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", server.token)
    c = MlflowClient(tracking_uri=server.url, registry_uri=server.url)
    c.as_user = lambda token: monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)
    return c


def _model(client, name: str, versions: int) -> list[str]:
    exp = client.create_experiment(f"/Shared/{name}-{uuid.uuid4().hex[:6]}")
    run_id = client.create_run(exp).info.run_id
    client.create_registered_model(name)
    return [client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id).version
            for _ in range(versions)]


@pytest.mark.filterwarnings("ignore::FutureWarning")  # MLflow deprecates stages; the registry keeps them
def test_rename_moves_the_history(server, client, carol, unique):
    user, token = carol
    old, new = unique("before"), unique("after")
    v1, v2 = _model(client, old, 2)
    client.transition_model_version_stage(old, v1, "Staging")
    client.set_registered_model_alias(old, "champion", v1)
    client.as_user(token)
    client.transition_model_version_stage(old, v2, "Production")
    before = [
        ("STAGE", v1, None, "None", "Staging", "admin"),
        ("ALIAS", None, "champion", None, v1, "admin"),
        ("STAGE", v2, None, "None", "Production", user),
    ]
    assert events_of(server, old) == before

    client.rename_registered_model(old, new)
    assert events_of(server, new) == before  # every event, in order, under the new name
    assert events_of(server, new, v1) == before[:2]
    # The old name is gone, with no history of its own.
    r = server.api("GET", "/api/2.0/mlflow/brickyard/registered-models/history", params={"name": old})
    assert r.status_code == 404 and r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    # Changes after the rename are recorded under the new name, after the moved ones.
    client.set_registered_model_alias(new, "champion", v2)
    assert events_of(server, new)[3:] == [("ALIAS", None, "champion", v1, v2, user)]
    # A new model taking the old name starts with an empty history.
    client.as_user(server.token)
    (w1,) = _model(client, old, 1)
    assert events_of(server, old) == []
    client.transition_model_version_stage(old, w1, "Staging")
    assert events_of(server, old) == [("STAGE", w1, None, "None", "Staging", "admin")]
    assert len(events_of(server, new)) == 4


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_deleting_a_version_records_its_aliases_removed(server, client, carol, unique):
    user, token = carol
    name = unique("deleted")
    v1, v2 = _model(client, name, 2)
    client.transition_model_version_stage(name, v1, "Production")
    for alias, version in (("champion", v1), ("prod", v1), ("challenger", v2)):
        client.set_registered_model_alias(name, alias, version)
    client.as_user(token)
    client.delete_model_version(name, v1)

    assert client.get_registered_model(name).aliases == {"challenger": v2}
    events = events_of(server, name)
    assert events[:4] == [
        ("STAGE", v1, None, "None", "Production", "admin"),
        ("ALIAS", None, "champion", None, v1, "admin"),
        ("ALIAS", None, "prod", None, v1, "admin"),
        ("ALIAS", None, "challenger", None, v2, "admin"),
    ]
    # The deletion: each alias of the version unset, by its deleter; no stage event for the deleted version,
    # and the other version's alias untouched.
    assert events[4:] == [
        ("ALIAS", None, "champion", v1, None, user),
        ("ALIAS", None, "prod", v1, None, user),
    ]
    # The deleted version's own history stays readable.
    assert events_of(server, name, v1) == [events[0], events[1], events[2], events[4], events[5]]
    # Deleting a version without aliases records nothing (a stage it had is not an event either).
    client.transition_model_version_stage(name, v2, "Staging")
    client.delete_registered_model_alias(name, "challenger")
    source = client.get_model_version(name, v2)
    v3 = client.create_model_version(name, source.source, run_id=source.run_id).version
    client.transition_model_version_stage(name, v3, "Archived")
    client.delete_model_version(name, v3)
    assert events_of(server, name)[6:] == [
        ("STAGE", v2, None, "None", "Staging", user),
        ("ALIAS", None, "challenger", v2, None, user),
        ("STAGE", v3, None, "None", "Archived", user),
    ]
