"""An answer that is not the JSON a caller expects (a proxy's HTML page, a bare string, a list where an
object belongs) is an IllumeError that says so, never a traceback further on."""
from __future__ import annotations

import http.server
import threading

import pytest

from illume.errors import IllumeError

ANSWERS = {  # path -> body, each answered 200 application/json
    "/api/html/": b"<html>a proxy's sign-in page</html>",
    "/api/text/": b'"x"',
    "/api/results-text/": b'{"results": "abc", "next": null}',
    "/api/numbers/": b"[1, 2]",
    "/api/tasks-ok/": b'[{"id": 1}, {"id": 2}]',
    "/reload": b"[]",
    "/health": b'["UP"]',
}


class _Answers(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the handler's API)
        body = ANSWERS.get(self.path.split("?")[0], b"{}")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.mark.parametrize("path, message", [
    ("/api/html/", "no JSON object or list: \"<html>a proxy's sign-in page</html>\""),
    ("/api/text/", "no JSON object or list"),
    ("/api/results-text/", "a list that is not one of objects"),
    ("/api/numbers/", "a list that is not one of objects"),
])
def test_a_listing_that_is_not_objects_is_a_clear_error(server, path, message):
    from illume.labelstudio.client import LabelStudioClient

    client = LabelStudioClient(server, "legacy-token", retries=0)
    with pytest.raises(IllumeError, match=message) as refused:
        list(client.pages(path))
    assert "Label Studio's own address" in refused.value.todo
    assert [t["id"] for t in client.pages("/api/tasks-ok/")] == [1, 2]


def test_the_backend_answering_no_json_object_is_a_clear_error(server):
    from connector.backend_client import BackendWait, backend_health, reload_backend

    with pytest.raises(IllumeError, match="answered GET /reload with no JSON object") as refused:
        reload_backend(server, "token", "/models/m", None, "v2", BackendWait(deadline_s=5))
    assert "illume-backend" in refused.value.todo
    assert backend_health(server)["status"].startswith("answered no JSON object")
