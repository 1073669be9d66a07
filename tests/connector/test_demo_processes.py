"""The interactive demo's processes: SIGTERM stops what it started as Ctrl-C does (servers and
the training job), and a resumed run keeps its ports (the address people bookmarked)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap

from connector.demo import kept_ports

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A stand-in for the demo: a server in its own session (as Label Studio and the backend run) and a
# training job, under the demo's SIGTERM handling and process cleanup.
DEMO_LIKE = textwrap.dedent("""
    import subprocess, sys
    from pathlib import Path
    from connector.demo import stop_on_sigterm
    from connector.local_label_studio import stop_process_group
    from connector.training_job import run_training

    export, log = Path(sys.argv[1]), Path(sys.argv[2])
    export.mkdir()
    (export / "rows.jsonl").write_text("")
    with stop_on_sigterm():
        server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
        try:
            print(server.pid, flush=True)
            job = "import os, time; print(os.getpid(), flush=True); time.sleep(600)"
            run_training([sys.executable, "-c", job, "--export", str(export), "--out", str(export.parent / "out")],
                         log, echo=lambda line: print(line, flush=True))
        finally:
            stop_process_group(server)
""")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_stops_the_servers_and_the_training_job_it_started(tmp_path):
    demo = subprocess.Popen([sys.executable, "-c", DEMO_LIKE, str(tmp_path / "export"), str(tmp_path / "train.log")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    server, job = int(demo.stdout.readline()), int(demo.stdout.readline())  # both running now
    assert alive(server) and alive(job)
    demo.send_signal(signal.SIGTERM)
    demo.wait(timeout=60)
    assert "KeyboardInterrupt" in demo.stderr.read()  # unwound as Ctrl-C unwinds it
    assert not alive(server) and not alive(job)


def test_a_resumed_run_keeps_its_ports_unless_one_was_taken(tmp_path):
    lines: list[str] = []
    first = kept_ports(tmp_path, ("label_studio", "backend"), lines.append)
    assert kept_ports(tmp_path, ("label_studio", "backend"), lines.append) == first and not lines
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", first["backend"]))
        taken.listen()
        again = kept_ports(tmp_path, ("label_studio", "backend"), lines.append)
    assert again["label_studio"] == first["label_studio"] and again["backend"] != first["backend"]
    assert lines == [f"port {first['backend']} (backend) is taken now: using another one"]
