"""The backend under hostile input, one test per class of attack (issue 16): each asserts the exact
refusal and that a good task in the same request still gets candidates. All servers are local."""
from __future__ import annotations

import base64
import http.client
import json
import time

import pytest

from backend_helpers import (LABEL_CONFIG, LocalHTTPServer, ServerThread, data_uri, held_sampler, png_bytes,
                             png_response, task)
from illume.images import ImagePolicy
from illume.labelstudio.client import LabelStudioClient


def _predict(client, tasks, project="1", **kwargs):
    return client.post("/predict", json={"tasks": tasks, "project": project, "label_config": LABEL_CONFIG}, **kwargs)


def _check(results, expected):
    """expected: per task, None for "gets candidates" or the text its error must contain."""
    assert len(results) == len(expected)
    for result, want in zip(results, expected):
        if want is None:
            assert result["result"] and "error" not in result, result
        else:
            assert result["result"] == [] and want in result["error"], (want, result)


def _images(method, path, headers, body):
    if path == "/ok.png":
        return png_response()
    if path == "/moved":
        return 302, {"Location": "http://localhost:1/ok.png", "Content-Length": "0"}, b""
    return 404, {"Content-Length": "0"}, b""


def test_urls_that_parsers_read_differently_are_refused_and_the_checked_url_is_fetched(make_client):
    with LocalHTTPServer(_images) as images, LocalHTTPServer(_images) as other:
        allowed = ["localhost", f"127.0.0.1:{images.port}"]
        client, _ = make_client(images=ImagePolicy(allowed_hosts=allowed))
        hostile = [
            (f"http://127.0.0.1:{images.port}\\@localhost:1/x.png", "backslashes"),
            (f"http://localhost:1@127.0.0.1:{images.port}/x.png", "user info"),
            (f"http://127.0.0.1:{other.port}/ok.png", f"host '127.0.0.1' (port {other.port}) is not in the allowed"),
            (f"http://%31%32%37.0.0.1:{images.port}/x.png", "is not a plain host name"),
            (f"http://127.0.0.1:{images.port}/x\t.png", "whitespace, control"),
            (f"http://lоcalhost:{images.port}/x.png", "non-ASCII"),  # a Cyrillic o
            (f"http://[::1]:{images.port}/x.png", "is not a plain host name"),
            (f"http://[::1:{images.port}/x.png", "the URL is malformed (Invalid IPv6 URL)"),
            (f"gopher://127.0.0.1:{images.port}/x.png", "scheme 'gopher' is not supported"),
            (f"http://127.0.0.1:{images.port}/moved", "redirects (HTTP 302), which is not followed"),
        ]
        tasks = [task(1, f"http://127.0.0.1:{images.port}/ok.png")]
        tasks += [task(i + 2, ref) for i, (ref, _) in enumerate(hostile)] + [task(99, data_uri())]
        response = _predict(client, tasks)
        assert response.status_code == 200
        _check(response.json()["results"], [None] + [reason for _, reason in hostile] + [None])
        assert sorted(path for _, path, _ in images.requests) == ["/moved", "/ok.png"]  # only what was checked
        assert other.requests == []


def test_label_studio_paths_are_normalised_and_only_its_data_routes_get_the_key(make_client):
    def label_studio(method, path, headers, body):
        return png_response() if path.startswith("/data/upload/1/") else (404, {"Content-Length": "0"}, b"")

    with LocalHTTPServer(label_studio) as ls:
        policy = ImagePolicy(label_studio=LabelStudioClient(ls.url, "secret-key"))
        client, _ = make_client(images=policy, write_candidates=False)
        hostile = [
            ("/data/upload/../../api/projects/", "Label Studio path '/api/projects/' is not one of its data routes"),
            ("/data/upload/%2e%2e/%2E%2e/api/users/", "Label Studio path '/api/users/' is not one of its data routes"),
            (f"{ls.url}/data/local-files/../../api/tokens", "'/api/tokens' is not one of its data routes"),
            ("/data/upload/%252e%252e/%252e%252e/api/", "encoded twice"),
            ("/data/upload/..\\..\\api/projects/", "backslashes"),
        ]
        tasks = [task(1, "/data/upload/1/red.png")] + [task(i + 2, ref) for i, (ref, _) in enumerate(hostile)]
        _check(_predict(client, tasks).json()["results"], [None] + [reason for _, reason in hostile])
        assert [(path, headers.get("Authorization")) for _, path, headers in ls.requests] == [
            ("/data/upload/1/red.png", "Token secret-key")]


def test_text_limits_and_undecodable_text_fail_their_task_only(make_client):
    client, _ = make_client(max_text_chars=500)
    tasks = [task(1, data_uri()), task(2, data_uri(), question="q" * 100_000),
             task(3, data_uri(), answer="a" * 501), task(4, data_uri(), question="what\x00 color ?"),
             task(5, data_uri("blue"))]
    # a lone UTF-16 surrogate, as a JSON escape (it cannot be encoded as UTF-8)
    body = json.dumps({"tasks": tasks, "project": "1", "label_config": LABEL_CONFIG})
    body = body.replace('"what color is the shape ?"', '"what \\ud800 color ?"', 1)
    response = client.post("/predict", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 200
    _check(response.json()["results"], [
        "task 1: field 'question' is not valid Unicode (a lone surrogate U+D800 at character 5)",
        "task 2: field 'question' is 100000 characters long, over the limit of 500",
        "task 3: field 'answer' is 501 characters long, over the limit of 500",
        "task 4: field 'question' holds the control character U+0000 at character 4",
        None])


def test_a_task_that_makes_the_model_raise_fails_alone(make_client):
    """Issue 12: the processor refuses one task of the batch (its question holds an image placeholder);
    the batch is retried in smaller groups, so only that task fails, with the reason."""
    client, _ = make_client(batch_size=8)
    tasks = [task(1, data_uri("red")), task(2, data_uri("blue"), question="what <image> is this ?"),
             task(3, data_uri("green"))]
    response = _predict(client, tasks)
    assert response.status_code == 200
    _check(response.json()["results"], [None, "the model failed on this task: ValueError: ", None])
    assert "<image> tokens" in response.json()["results"][1]["error"]


def test_images_small_on_disk_but_huge_when_decoded_fail_their_task_only(make_client, image_root):
    (image_root / "thin.png").write_bytes(png_bytes(size=(1, 100_000)))  # under 1 kB, far past 20:1
    (image_root / "wide.png").write_bytes(png_bytes(size=(2_000, 150)))
    import io

    from PIL import Image

    portable_pixmap = io.BytesIO()
    Image.new("RGB", (48, 40), "red").save(portable_pixmap, format="PPM")  # a format PIL reads, but not accepted
    (image_root / "red.ppm").write_bytes(portable_pixmap.getvalue())
    client, _ = make_client()
    client.app.state.settings.images.max_pixels = 250_000
    tasks = [task(1, str(image_root / "thin.png")), task(2, str(image_root / "wide.png")),
             task(3, data_uri(size=(400, 300))), task(4, str(image_root / "red.ppm"))]
    assert (image_root / "thin.png").stat().st_size < 1000
    _check(_predict(client, tasks).json()["results"], [
        "is 1x100000, an aspect ratio over the limit of 20:1",
        "has 2000x150 = 300000 pixels, over the limit of 250000", None,
        "is not a readable image in an accepted format (PNG, JPEG, WEBP, GIF, BMP, TIFF)"])


def test_auth_comes_before_the_body_and_the_api_docs_are_behind_it(make_client):
    client, _ = make_client(basic_auth=("studio", "s3cret"))
    creds = {"Authorization": "Basic " + base64.b64encode(b"studio:s3cret").decode()}
    unauthenticated = client.post("/predict", content=b'{"tasks": "not a list", "x": "' + b"A" * 10_000 + b'"}',
                                  headers={"Content-Type": "application/json"})
    assert unauthenticated.status_code == 401
    assert unauthenticated.json() == {"detail": "HTTP Basic credentials missing or wrong"}  # no validation echo
    for path in ("/docs", "/redoc", "/openapi.json", "/versions"):
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers=creds).status_code == 200, path
    assert client.get("/health").status_code == 200
    good = client.post("/predict", json={"tasks": [task(1, data_uri())], "project": "1"}, headers=creds)
    assert good.status_code == 200 and good.json()["results"][0]["result"]
    invalid = client.post("/predict", json={"tasks": "x" * 100_000}, headers=creds)  # authenticated, malformed
    assert invalid.status_code == 422 and invalid.json()["detail"][0]["loc"] == ["body", "tasks"]
    assert len(invalid.content) < 1000  # the input is not echoed back


def test_official_basic_auth_env_vars_are_accepted(monkeypatch):
    import click

    from ml_backend.server import parse_basic_auth

    monkeypatch.setenv("BASIC_AUTH_USER", "studio")
    monkeypatch.setenv("BASIC_AUTH_PASS", "s3cret")
    assert parse_basic_auth(None) == ("studio", "s3cret")
    assert parse_basic_auth("a:b") == ("a", "b")  # --basic-auth wins
    monkeypatch.delenv("BASIC_AUTH_PASS")
    with pytest.raises(click.BadParameter, match="set both BASIC_AUTH_USER and BASIC_AUTH_PASS"):
        parse_basic_auth(None)


def _raw_post(port: int, headers: dict, body: bytes | None = None, chunks=None) -> tuple[int, bytes, float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    started = time.monotonic()
    try:
        connection.putrequest("POST", "/predict")
        for key, value in headers.items():
            connection.putheader(key, value)
        connection.endheaders()
        try:
            if body is not None:
                connection.send(body)
            for chunk in chunks or []:
                connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the whole body was sent
        response = connection.getresponse()
        return response.status, response.read(), time.monotonic() - started
    finally:
        connection.close()


def test_body_and_task_count_limits(make_client, make_settings, llava):
    from ml_backend.app import create_app
    from ml_backend.model_holder import Loaded, ModelHolder

    settings = make_settings(max_body_bytes=1_000_000, max_tasks_per_request=3)
    app = create_app(settings, ModelHolder(Loaded(llava, "v1"), device="cpu"))
    with ServerThread(app) as server:
        # 50 MB announced, a few bytes sent: refused from the header, nothing buffered
        status, body, elapsed = _raw_post(server.port, {"Content-Type": "application/json",
                                                        "Content-Length": str(50 * 1024 * 1024)}, b"{")
        assert status == 413 and b"over the limit of 1000000" in body and elapsed < 5
        # no Content-Length (chunked): refused while it streams in, after about the limit
        chunks = (b" " * 65536 for _ in range(800))  # 50 MB if it were all read
        status, body, _ = _raw_post(server.port, {"Content-Type": "application/json",
                                                  "Transfer-Encoding": "chunked"}, chunks=chunks)
        assert status == 413 and b"more than 1000000 bytes" in body
        too_many = [task(i, data_uri()) for i in range(4)]
        import requests

        refused = requests.post(f"{server.url}/predict", json={"tasks": too_many}, timeout=30)
        assert refused.status_code == 413 and "4 tasks in one request, over the limit of 3" in refused.text
        huge_config = requests.post(f"{server.url}/predict", timeout=30,
                                    json={"tasks": too_many[:1], "label_config": "<View>" + " " * 200_000 + "</View>"})
        assert huge_config.status_code == 413 and "over the limit of 100000" in huge_config.text
        good = requests.post(f"{server.url}/predict", json={"tasks": too_many[:1]}, timeout=60)
        assert good.status_code == 200 and good.json()["results"][0]["result"]


def test_a_trickling_image_meets_the_download_deadline_and_health_never_waits(make_settings, llava):
    from ml_backend.app import create_app
    from ml_backend.model_holder import Loaded, ModelHolder

    def trickle(method, path, headers, body):
        if path == "/ok.png":
            return png_response()

        def pieces():
            deadline = time.monotonic() + 10  # bounded in time
            while time.monotonic() < deadline:
                yield b"x"
                time.sleep(0.2)
        return 200, {"Content-Type": "image/png", "Content-Length": "100000"}, pieces()

    with LocalHTTPServer(trickle) as images:
        policy = ImagePolicy(allowed_hosts=[f"127.0.0.1:{images.port}"], download_deadline=1.0)
        settings = make_settings(images=policy, download_workers=4)  # a request may hold 2 of them
        app = create_app(settings, ModelHolder(Loaded(llava, "v1"), device="cpu"))
        with ServerThread(app) as server:
            import threading

            import requests

            slow = [task(i, f"{images.url}/slow-{i}.png") for i in range(8)]
            response: dict = {}
            started = time.monotonic()
            worker = threading.Thread(target=lambda: response.update(r=requests.post(
                f"{server.url}/predict", json={"tasks": slow + [task(9, f"{images.url}/ok.png")]}, timeout=60)))
            worker.start()
            while len(images.requests) < 2 and time.monotonic() - started < 10:
                time.sleep(0.02)  # until two download workers are held by trickles
            health_started = time.monotonic()
            assert requests.get(f"{server.url}/health", timeout=5).status_code == 200
            assert time.monotonic() - health_started < 0.5
            worker.join(60)
            elapsed = time.monotonic() - started
    results = response["r"].json()["results"]
    _check(results, ["took longer than the deadline of 1 s"] * 8 + [None])
    assert elapsed < 8 / 2 * 1.0 + 4, elapsed  # 8 trickles, 2 at a time, 1 s each (not 10 s each), then the model


def test_the_queue_is_bounded_in_tasks(make_client):
    import threading

    client, app = make_client(queue_size=4)
    with held_sampler(app.state.holder.current.vlm) as (entered, release, _):  # the admitted request waits in the model
        first: dict = {}
        worker = threading.Thread(target=lambda: first.update(r=_predict(client, [task(i, data_uri()) for i in range(3)])))
        worker.start()
        assert entered.wait(60)
        refused = _predict(client, [task(7, data_uri()), task(8, data_uri())])
        assert refused.status_code == 503 and "3 tasks are already waiting or running" in refused.json()["detail"]
        release.set()
        worker.join(60)
        assert all(r["result"] for r in first["r"].json()["results"])


def test_work_past_the_label_studio_timeout_is_dropped(make_client):

    client, app = make_client(batch_size=2, predict_timeout_s=1.0)
    with held_sampler(app.state.holder.current.vlm, hold_s=3) as (_, _, seen):  # outlives the request's deadline
        results = _predict(client, [task(i, data_uri()) for i in range(6)]).json()["results"]
    (first_batch,) = seen  # only the batch that was running at the deadline reached the model
    assert sum(bool(r["result"]) for r in results) == first_batch >= 1
    assert all("dropped: the request's deadline passed" in r["error"] for r in results if not r["result"])
    assert app.state.batcher.tasks_in_flight == 0


def test_work_of_a_client_that_disconnected_is_dropped(make_settings, llava):

    import requests

    from ml_backend.app import create_app
    from ml_backend.model_holder import Loaded, ModelHolder

    app = create_app(make_settings(batch_size=1), ModelHolder(Loaded(llava, "v1"), device="cpu"))
    with held_sampler(llava, hold_s=30) as (entered, release, seen):
        with ServerThread(app) as server:
            with pytest.raises(requests.Timeout):  # the client gives up and closes its connection
                requests.post(f"{server.url}/predict", json={"tasks": [task(i, data_uri()) for i in range(20)]},
                              timeout=1.0)
            assert entered.is_set()
            deadline = time.monotonic() + 10
            while app.state.batcher.tasks_in_flight > 1 and time.monotonic() < deadline:
                time.sleep(0.05)  # the server notices the disconnect within about half a second
            assert app.state.batcher.tasks_in_flight == 1  # only the task already in the model is left
            release.set()
            good = requests.post(f"{server.url}/predict", json={"tasks": [task(1, data_uri())]}, timeout=60)
            assert good.json()["results"][0]["result"]
    assert seen == [1, 1]  # the 19 dropped tasks never reached the model


def test_predict_writes_only_the_candidates_field_and_only_into_the_named_projects_tasks(make_client):
    stored = {1: {"image": "/data/upload/1/a.png", "question": "stored question", "answer": "red",
                  "explanation": "kept", "candidates": []}}
    patches: list = []

    def label_studio(method, path, headers, body):
        if method == "GET" and path.startswith("/api/projects/1/export?"):
            ids = [int(part.split("=")[1]) for part in path.split("?")[1].split("&") if part.startswith("ids")]
            payload = json.dumps([{"id": i, "data": stored[i]} for i in ids if i in stored]).encode()
            return 200, {"Content-Type": "application/json", "Content-Length": str(len(payload))}, payload
        if method == "PATCH":
            patches.append((path, json.loads(body)))
            return 200, {"Content-Type": "application/json", "Content-Length": "2"}, b"{}"
        return 404, {"Content-Length": "0"}, b""

    with LocalHTTPServer(label_studio) as ls:
        client, _ = make_client(label_studio=LabelStudioClient(ls.url, "key"))
        hostile = {"id": 1, "data": {"image": data_uri(), "question": "what color ?", "answer": "red",
                                     "explanation": "overwritten!", "evil": "<script>"}}
        other_project = task(2, data_uri())  # a task of another project, named in this request
        results = _predict(client, [hostile, other_project], project="1.1700000000").json()["results"]
        _check(results, [None, "task 2 is not a task of project 1, so no candidates are written"])
        (path, body), = patches
        assert path == "/api/tasks/1/"
        assert set(body) == {"data"} and {k: v for k, v in body["data"].items() if k != "candidates"} == {
            k: v for k, v in stored[1].items() if k != "candidates"}
        assert body["data"]["candidates"] and all(set(c) == {"value", "alias"} for c in body["data"]["candidates"])
        no_project = _predict(client, [hostile], project=None).json()["results"]
        _check(no_project, ["the request names no project"])
        assert len(patches) == 1


def test_a_one_task_request_is_not_stuck_behind_a_500_task_one():
    from illume.records import Candidate
    from ml_backend.batcher import Batcher

    batches: list[list] = []

    class Task:  # fetched in the download pool, like a task's image
        def __init__(self, name: tuple) -> None:
            self.name = name

        def fetch(self) -> tuple:
            return self.name

        def build(self, fetched: tuple) -> tuple:
            return fetched

    import threading

    running, release = threading.Event(), threading.Event()

    def run(queries):
        if len(batches) == 3:  # hold the fourth batch while the small request comes in
            running.set()
            release.wait(30)
        batches.append(list(queries))
        return [[Candidate(str(q), 0.0, 1.0)] for q in queries], "v"

    batcher = Batcher(run, batch_size=8, queue_size=501)
    try:
        big = batcher.submit([Task(("big", i)) for i in range(500)])
        assert running.wait(30)
        small_task = Task(("small", 0))
        small = batcher.submit([small_task])  # the big request fills the prefetch; still fetched at once
        deadline = time.monotonic() + 30
        while not any(job.ready and job.items[0] is small_task for job in batcher._jobs):
            assert time.monotonic() < deadline, "the small request's task was not fetched while a batch ran"
            time.sleep(0.005)
        release.set()
        assert small.result(30).candidates[0][0].text == "('small', 0)"
        served_in = next(n for n, batch in enumerate(batches) if ("small", 0) in batch)
        assert served_in == 4 and not big.done()  # the batch right after the one running, not after 60 more
        assert sum(1 for _, number in batches[4] if _ == "big") <= 4  # an equal share of that batch
        assert all(errors is None for errors in big.result(60).errors)
    finally:
        batcher.stop()


def test_images_are_decoded_when_their_batch_runs_not_all_at_once():
    from illume.records import Candidate
    from ml_backend.batcher import Batcher

    events: list[str] = []

    class Task:  # a Pending task: fetched in the download pool, built (decoded) at batch time
        def __init__(self, number: int) -> None:
            self.number = number

        def fetch(self) -> bytes:
            return b"encoded image"

        def build(self, fetched: bytes) -> int:
            events.append("decode")
            return self.number

    def run(queries):
        events.append(f"batch of {len(queries)}")
        return [[Candidate("c", 0.0, 1.0)] for _ in queries], "v"

    batcher = Batcher(run, batch_size=4, queue_size=20)
    try:
        assert batcher.submit([Task(i) for i in range(12)]).result(30).errors == [None] * 12
    finally:
        batcher.stop()
    decoded_ahead = 0
    for event in events:
        if event == "decode":
            decoded_ahead += 1
        else:
            assert decoded_ahead == int(event.split()[-1]) <= 4  # only the batch about to run is decoded
            decoded_ahead = 0
