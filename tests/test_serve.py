"""`localdiffusion serve` as a real process: jobs survive a kill -9, exposure needs a token, a busy port is one sentence."""

from __future__ import annotations

import inspect
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from localdiffusion.store.home import Home

from test_server_api import linked_home

CLIENT = {"X-Client-Id": "restart-test"}
SLOW_RECIPE = {"prompt": "a slow lighthouse", "model": "tiny-sd1", "steps": 30, "width": 64, "height": 64,
               "sampler_name": "Euler", "seed": 7}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command(*args: str) -> list[str]:
    from localdiffusion.cli import app as cli_app

    if "serve" in inspect.getsource(cli_app._register_commands):
        return [sys.executable, "-m", "localdiffusion", "serve", *args]
    # Until cli/app.py registers the command, import it before running the CLI.
    code = "import localdiffusion.cli.serve; from localdiffusion.cli.app import main; main()"
    return [sys.executable, "-c", code, "serve", *args]


def wait_until(check, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the server exited ({proc.returncode}) while waiting for {what}:\n{log.read_text() if log else ''}")
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}:\n{log.read_text() if log else ''}")


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code in (200, 401)
    except httpx.TransportError:
        return False


@contextmanager
def server(home: Path, port: int, log: Path, *extra: str) -> Iterator[subprocess.Popen]:
    """A running `localdiffusion serve`; killed on the way out whatever happens."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(serve_command("--port", str(port), "--home", str(home), *extra), stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/api/status"), 120, "the server to answer", proc, log)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


@pytest.mark.timeout(600)
def test_no_job_is_lost_when_the_server_is_killed(tmp_path, model_home):
    home = linked_home(tmp_path / "home", model_home)
    port, log = free_port(), tmp_path / "server.log"
    base = f"http://127.0.0.1:{port}"
    with server(home.root, port, log) as proc:
        ids = [httpx.post(f"{base}/api/jobs", json={**SLOW_RECIPE, "seed": 7 + i}, headers=CLIENT, timeout=30).json()["id"]
               for i in range(3)]

        def running_job() -> dict | None:
            jobs = [httpx.get(f"{base}/api/jobs/{i}", timeout=5).json() for i in ids]
            assert not all(j["status"] == "done" for j in jobs), "every job finished before the server could be killed"
            return next((j for j in jobs if j["status"] == "running"), None)

        killed = wait_until(running_job, 120, "a job to start running", proc, log)
        proc.kill()  # SIGKILL: no shutdown code runs
        proc.wait(timeout=30)

    with server(home.root, port, log) as restarted:
        def finished() -> list[dict] | None:
            jobs = [httpx.get(f"{base}/api/jobs/{i}", timeout=5).json() for i in ids]
            return jobs if all(j["status"] in ("done", "failed", "cancelled") for j in jobs) else None

        jobs = wait_until(finished, 300, "the jobs to finish after the restart", restarted, log)
    assert [j["status"] for j in jobs] == ["done"] * 3, [j["error"] for j in jobs]
    assert all(len(j["result"]["images"]) == 1 for j in jobs)
    attempts = {j["id"]: j["attempts"] for j in jobs}
    assert attempts[killed["id"]] == 2, "the job running at the kill is re-queued once"
    assert all(n == 1 for job_id, n in attempts.items() if job_id != killed["id"])


@pytest.mark.timeout(600)
def test_a_kill_during_a_participants_job_loses_nothing_and_keeps_the_owner(tmp_path, model_home):
    """Jobs of two people in the fair queue; a SIGKILL while one runs: after the restart every job is done, each
    image belongs to whoever queued it, and the killed job ran again once."""
    from localdiffusion.jobs import SQLiteJobQueue
    from localdiffusion.recipe import Recipe
    from localdiffusion.store.db import Database

    home = linked_home(tmp_path / "home", model_home)
    with Database(home.db_path) as db:
        queue = SQLiteJobQueue(db)
        people = {name: db.ensure_owner(name) for name in ("ann", "ben")}
        owner_of = {queue.submit(Recipe.model_validate({**SLOW_RECIPE, "seed": i}), people[name], "tab").id: people[name]
                    for i, name in enumerate(["ann", "ann", "ben"])}
    port, log = free_port(), tmp_path / "server.log"

    def jobs() -> list[dict]:
        """The jobs as the database holds them (the server's API shows the local owner only their own)."""
        with Database(home.db_path) as db:
            rows = db.query("SELECT id, status, result, attempts, error, device, gpu_seconds FROM jobs ORDER BY id")
        keys = ("id", "status", "result", "attempts", "error", "device", "gpu_seconds")
        return [{**dict(zip(keys, row)), "result": json.loads(row[2] or "{}")} for row in rows]

    with server(home.root, port, log) as proc:
        killed = wait_until(lambda: next((j for j in jobs() if j["status"] == "running"), None), 120, "a job to run", proc, log)
        proc.kill()  # SIGKILL: no shutdown code runs
        proc.wait(timeout=30)
    with server(home.root, port, log) as restarted:
        def finished() -> list[dict] | None:
            now = jobs()
            return now if all(j["status"] in ("done", "failed", "cancelled") for j in now) else None

        done = wait_until(finished, 300, "the jobs to finish after the restart", restarted, log)
    assert [j["status"] for j in done] == ["done"] * 3, [j["error"] for j in done]
    with Database(home.db_path) as db:
        for job in done:
            assert db.get_image(job["result"]["images"][0]).owner_id == owner_of[job["id"]]
            assert job["gpu_seconds"] > 0 and job["device"]
        rows = dict(db.query("SELECT id, owner_id FROM jobs"))
    assert rows == owner_of
    assert {j["id"]: j["attempts"] for j in done}[killed["id"]] == 2


@pytest.mark.timeout(180)
def test_listening_beyond_this_machine_requires_a_generated_token(tmp_path):
    home = Home(tmp_path / "home").ensure()
    port, log = free_port(), tmp_path / "server.log"
    with server(home.root, port, log, "--host", "0.0.0.0"):
        output = wait_until(lambda: "Press Ctrl+C" in log.read_text() and log.read_text(), 30, "the banner", log=log)
        token = re.search(r"Access token: (\S+)", output).group(1)
        assert f"http://127.0.0.1:{port}/?token={token}" in output
        assert "No models yet" in output and "models add PATH" in output
        url = f"http://127.0.0.1:{port}/api/status"  # only ever connect to this machine
        assert httpx.get(url, timeout=5).status_code == 401
        assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=5).json()["has_models"] is False


@pytest.mark.timeout(300)
def test_the_printed_add_command_works_and_the_running_server_notices_the_model(tmp_path):
    """The banner's `models add` command (this install's executable, this server's --home) adds a model
    that the running studio lists without a rescan; the studio's help prints the same command."""
    import shlex

    import torch
    from safetensors.torch import save_file

    home = Home(tmp_path / "home").ensure()
    port, log = free_port(), tmp_path / "server.log"
    base = f"http://127.0.0.1:{port}"
    model = tmp_path / "elsewhere" / "dreamy.safetensors"
    model.parent.mkdir()
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(32, 4, 3, 3),
               "cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.zeros(768)}, str(model))
    with server(home.root, port, log):
        banner = wait_until(lambda: "Press Ctrl+C" in log.read_text() and log.read_text(), 30, "the banner", log=log)
        command = re.search(r"`([^`]*models add PATH[^`]*)`", banner).group(1)
        assert f"--home {home.root}" in command
        assert command in httpx.get(f"{base}/api/status", timeout=5).json()["add_models_help"]
        assert httpx.get(f"{base}/api/models", timeout=5).json() == []
        args = [str(model) if word == "PATH" else word for word in shlex.split(command)]
        added = subprocess.run(args, capture_output=True, text=True, timeout=120)  # as a person would, in another terminal
        assert added.returncode == 0, added.stderr
        assert [m["name"] for m in httpx.get(f"{base}/api/models", timeout=5).json()] == ["dreamy"]
        assert httpx.get(f"{base}/api/status", timeout=5).json()["has_models"] is True


def test_the_printed_command_is_the_one_that_runs_here(tmp_path, monkeypatch):
    from localdiffusion.store import home as api

    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    script = bin_dir / "localdiffusion"
    script.write_text("#!/bin/sh\n")
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    monkeypatch.setattr(sys, "argv", [str(script), "serve"])
    monkeypatch.setattr(api.shutil, "which", lambda name: None)
    assert api.cli_command() == str(script)  # not on PATH: the full path of the script
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "localdiffusion" / "__main__.py"), "serve"])  # python -m localdiffusion
    assert api.cli_command() == str(script)  # the script beside this Python
    monkeypatch.setattr(api.shutil, "which", lambda name: str(script))
    assert api.cli_command() == "localdiffusion"  # on PATH: the plain name
    script.unlink()
    assert api.cli_command() == f"{bin_dir / 'python'} -m localdiffusion"
    monkeypatch.delenv("LOCALDIFFUSION_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert api.home_option(Home()) == ""
    assert api.home_option(Home(tmp_path / "my home")) == f" --home '{tmp_path / 'my home'}'"
    monkeypatch.setenv("LOCALDIFFUSION_HOME", str(tmp_path / "data" / "localdiffusion"))
    assert "--home" in api.home_option(Home())  # a new terminal may not have the variable


def test_a_busy_port_is_one_sentence(tmp_path, capsys):
    import localdiffusion.cli.serve  # noqa: F401  (registers the command)
    from localdiffusion.cli.app import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as exited:
            main(["serve", "--port", str(port), "--home", str(tmp_path / "home")])
    assert exited.value.code == 2
    message = capsys.readouterr().err
    assert f"Port {port} on 127.0.0.1 is already in use" in message and "--port" in message and "Traceback" not in message


@pytest.mark.parametrize("token, weak", [("abc123", True), ("aaaaaaaaaaaaaaaaaaaa", True), ("k3J9-xQ2vL8mZp4TtR7w", False)])
def test_a_weak_token_gets_a_warning(tmp_path, capsys, token, weak):
    import localdiffusion.cli.serve  # noqa: F401  (registers the command)
    from localdiffusion.cli.app import main

    with socket.socket() as taken:  # a busy port: serve stops right after checking its token
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        with pytest.raises(SystemExit):
            main(["serve", "--port", str(taken.getsockname()[1]), "--token", token, "--home", str(tmp_path / "home")])
    warning = [line for line in capsys.readouterr().err.splitlines() if "easy to guess" in line]
    assert len(warning) == (1 if weak else 0), warning
    if weak:
        assert "--token" in warning[0] and token not in warning[0]
