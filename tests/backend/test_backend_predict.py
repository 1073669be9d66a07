"""The protocol routes over a real tiny model: bad input, auth, 503, reload."""
from __future__ import annotations

import base64
import threading
import time


from backend_helpers import LABEL_CONFIG, data_uri, held_sampler, png_bytes, task


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _predict(client, tasks, **kwargs):
    return client.post("/predict", json={"tasks": tasks, "project": "1", "label_config": LABEL_CONFIG}, **kwargs)


def test_health_setup_and_prediction_shape(make_client, image_root):
    client, app = make_client()
    version = app.state.holder.version
    assert client.get("/health").json()["status"] == "UP"
    assert client.post("/setup", json={"project": "1", "schema": LABEL_CONFIG}).json() == {"model_version": version}
    response = _predict(client, [task(1, str(image_root / "red.png")), task(2, data_uri("blue"))])
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == 2
    for result in results:
        assert result["model_version"] == version
        assert result["result"], "each good task gets pre-ticked candidates"
        (choices,) = result["result"]
        assert (choices["from_name"], choices["to_name"], choices["type"]) == ("rationales", "image", "choices")
        assert 1 <= len(choices["value"]["choices"]) <= 2  # preselect=2
        assert all(alias.startswith("c") for alias in choices["value"]["choices"])
        assert 0 < result["score"] <= 1


def test_field_names_come_from_the_labeling_config(make_client, image_root):
    client, _ = make_client()
    config = LABEL_CONFIG.replace("$image", "$picture").replace("$question", "$q").replace("$answer", "$a")
    tasks = [{"id": 1, "data": {"picture": str(image_root / "red.png"), "q": "what color ?", "a": "red"}},
             task(2, str(image_root / "red.png"))]  # has image/question/answer, not picture/q/a
    results = client.post("/predict", json={"tasks": tasks, "label_config": config}).json()["results"]
    assert results[0]["result"] and results[1]["result"] == []


def test_bad_tasks_get_empty_results_and_the_others_theirs(make_client, image_root, tmp_path, caplog):
    (image_root / "broken.png").write_bytes(b"garbage")
    (image_root / "big.png").write_bytes(png_bytes(size=(500, 500)))
    (tmp_path / "outside.png").write_bytes(png_bytes())
    client, _ = make_client()
    client.app.state.settings.images.max_pixels = 100_000
    good = str(image_root / "red.png")
    tasks = [
        task(1, good),
        task(2, str(image_root / "missing.png")),  # image missing
        task(3, str(image_root / "broken.png")),  # unreadable
        task(4, str(image_root / "big.png")),  # too large
        task(5, "https://example.com/cat.png"),  # disallowed host
        task(6, str(image_root / ".." / "outside.png")),  # path traversal
        {"id": 7, "data": {"image": good, "question": "what color ?"}},  # answer field missing
        task(8, data_uri("green")),
    ]
    with caplog.at_level("WARNING", logger="ml_backend"):
        results = _predict(client, tasks).json()["results"]
    assert len(results) == len(tasks)
    assert [bool(r["result"]) for r in results] == [True, False, False, False, False, False, False, True]
    assert "error" not in results[0] and "error" not in results[7]
    reasons = ["does not exist", "not a readable image", "over the limit of 100000",
               "host 'example.com' (port 443) is not in the allowed hosts", "outside the allowed roots",
               "task 7: field 'answer' is missing"]
    for result, reason in zip(results[1:7], reasons):  # each refused task says why, in the response and the log
        assert reason in result["error"], (reason, result)
        assert reason in caplog.text
    assert "task 2 skipped: image" in caplog.text


def test_basic_auth_refusals(make_client, image_root):
    client, _ = make_client(basic_auth=("studio", "s3cret"))
    body = {"tasks": [task(1, str(image_root / "red.png"))]}
    assert client.post("/predict", json=body).status_code == 401
    assert client.post("/predict", json=body, headers=_basic("studio", "wrong")).status_code == 401
    assert client.post("/setup", json={}, headers={"Authorization": "Basic !!!"}).status_code == 401
    assert client.post("/webhook", json={"action": "START_TRAINING"}).status_code == 401
    assert client.post("/predict", json=body, headers=_basic("studio", "s3cret")).status_code == 200
    assert client.get("/health").status_code == 200  # Label Studio's health check carries no credentials


def test_admin_token_refusals(make_client, llava_dir):
    client, _ = make_client()
    assert client.post("/reload", json={"model": str(llava_dir)}).status_code == 403  # no admin token set
    client, _ = make_client(admin_token="adm1n", basic_auth=("studio", "s3cret"))
    assert client.get("/reload").status_code == 401
    assert client.get("/reload", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.post("/reload", json={"model": str(llava_dir)}, headers=_basic("studio", "s3cret")).status_code == 401
    assert client.get("/reload", headers={"Authorization": "Bearer adm1n"}).json()["state"] == "idle"


def _wait_reload(client, headers, deadline_s=120):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        status = client.get("/reload", headers=headers).json()
        if status["state"] != "loading":
            return status
        time.sleep(0.1)  # polling a background job
    raise AssertionError("reload did not finish")


def test_broken_checkpoint_is_refused_and_the_old_model_keeps_serving(make_client, image_root, tmp_path, llava_dir):
    import shutil

    broken = tmp_path / "broken-checkpoint"
    shutil.copytree(llava_dir, broken)
    weights = next(broken.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated weights file
    admin = {"Authorization": "Bearer adm1n"}
    client, app = make_client(admin_token="adm1n")
    old = app.state.holder.version

    assert client.post("/reload", json={"model": str(broken), "version": "round-9"}, headers=admin).status_code == 202
    status = _wait_reload(client, admin)
    assert status["state"] == "failed" and "checkpoint refused" in status["error"]
    assert status["serving_version"] == old
    assert client.post("/setup", json={}).json()["model_version"] == old
    result = _predict(client, [task(1, str(image_root / "red.png"))]).json()["results"][0]
    assert result["result"] and result["model_version"] == old

    missing = client.post("/reload", json={"model": str(tmp_path / "nowhere")}, headers=admin)
    assert missing.status_code == 422 and "is not a local directory with config.json" in missing.json()["detail"]
    hub_id = client.post("/reload", json={"model": "some-org/some-model"}, headers=admin)  # no network lookups
    assert hub_id.status_code == 422 and "--allow-hub-models" in hub_id.json()["detail"]


def test_good_reload_changes_the_version(make_client, image_root, llava_dir):
    admin = {"Authorization": "Bearer adm1n"}
    client, app = make_client(admin_token="adm1n")
    assert client.post("/reload", json={"model": str(llava_dir), "version": "round-1"}, headers=admin).status_code == 202
    status = _wait_reload(client, admin)
    assert status["state"] == "ready" and status["serving_version"] == "round-1"
    assert client.post("/setup", json={}).json()["model_version"] == "round-1"
    assert _predict(client, [task(1, data_uri())]).json()["results"][0]["model_version"] == "round-1"


def test_queue_full_answers_503_with_retry_after(make_client, image_root):
    client, app = make_client(queue_size=1)
    with held_sampler(app.state.holder.current.vlm) as (entered, release, _):  # the admitted request waits in the model
        first: dict = {}
        worker = threading.Thread(target=lambda: first.update(r=_predict(client, [task(1, data_uri())])))
        worker.start()
        assert entered.wait(60)
        refused = _predict(client, [task(2, data_uri())])
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "5"
        release.set()
        worker.join(60)
        assert first["r"].status_code == 200
        assert _predict(client, [task(3, data_uri())]).status_code == 200  # room again


def test_concurrent_requests_share_model_batches(make_client):
    client, app = make_client(batch_size=8)
    with held_sampler(app.state.holder.current.vlm) as (entered, release, sizes):
        threads = [threading.Thread(target=_predict, args=(client, [task(i, data_uri())])) for i in range(5)]
        threads[0].start()
        assert entered.wait(60)  # the first request occupies the model...
        for thread in threads[1:]:
            thread.start()
        deadline = time.monotonic() + 30
        while app.state.batcher.jobs_in_flight < 5 and time.monotonic() < deadline:
            time.sleep(0.01)  # ...until the other four are queued
        release.set()
        for thread in threads:
            thread.join(60)
    assert sizes == [1, 4]


def test_a_task_gets_the_same_candidates_whatever_it_is_batched_with(make_client, image_root):
    """Tasks are batched as their images arrive; a task's draws follow its id and the options it holds."""
    client, _ = make_client(batch_size=8, preselect=1)
    red, blue = str(image_root / "red.png"), str(image_root / "blue.png")

    def best(tasks, which: int = 0) -> float:  # the prediction's score: its best candidate's probability
        return _predict(client, tasks).json()["results"][which]["score"]

    alone = best([task(7, red)])
    companions = [task(8, blue, "is the shape blue ?", "yes"), task(9, data_uri("green"), "what is it ?", "a square")]
    assert best(companions + [task(7, red)], which=2) == alone
    assert best([task(7, red)] + companions[::-1]) == alone
    scores = {best([task(n, red)]) for n in range(20, 26)}  # the same picture and text as other tasks
    assert len(scores) >= 4
    holding = task(7, red)
    holding["data"]["candidates"] = [{"value": "it is red.", "alias": "c0"}]  # asked for more (resample)
    assert best([holding]) != alone


def test_openapi_schema_lists_the_routes(make_client):
    client, _ = make_client()
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/health", "/setup", "/predict", "/webhook", "/reload"} <= set(paths)
