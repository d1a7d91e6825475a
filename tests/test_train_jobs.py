"""Training in the studio: datasets through the API, a "train" job through the real queue (progress with the loss,
samples, the LoRA in the library and usable in a generation), cancel, a `kill -9` of the server mid-training and
the resumed job, the class limits on training, and another participant kept out of the dataset and the LoRA."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from localdiffusion.server.app import create_app
from localdiffusion.server.studio import Studio

from test_class_queue import ANN, BEN, TEACHER, class_client
from test_server_api import linked_home, wait_done
from test_serve import free_port, server, wait_until

TRAIN = {"kind": "lora", "model": "tiny-sd1", "settings": {"steps": 4, "resolution": 64, "rank": 4, "save_every": 1},
         "sample_every": 2, "sample_steps": 2, "sample_size": 64}


def picture_png(shift: int) -> bytes:
    array = np.zeros((64, 64, 3), np.uint8)
    array[16 + shift:40 + shift, 16:48] = (255, 0, 0)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def make_dataset(client: TestClient, headers: dict | None = None, **changes) -> dict:
    refs = [client.post("/api/uploads", files={"file": (f"p{i}.png", picture_png(i * 4), "image/png")},
                        headers=headers or {}).json()["ref"] for i in range(2)]
    body = {"name": "red squares", "trigger": "redsq_thing", "source": "drawn by the test, mine",
            "pictures": [{"ref": r, "caption": "a red square"} for r in refs], **changes}
    response = client.post("/api/datasets", json=body, headers=headers or {})
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture()
def studio(tmp_path, model_home) -> Studio:
    return Studio.open(linked_home(tmp_path / "home", model_home))


def test_a_training_job_reports_its_loss_and_puts_a_usable_lora_in_the_library(studio):
    with TestClient(create_app(studio), headers={"X-Client-Id": "tab-a"}) as client:
        dataset = make_dataset(client)
        assert [p["caption"] for p in dataset["pictures"]] == ["a red square"] * 2
        estimate = client.post("/api/train/estimate", json={**TRAIN, "dataset": dataset["id"]}).json()
        assert estimate["steps"] == 4 and estimate["resolution"] == 64 and "seconds" in estimate
        sub, events = studio.events.subscribe_queue()
        job = client.post("/api/train", json={**TRAIN, "dataset": dataset["id"]})
        assert job.status_code == 201, job.text
        units = studio.db.query("SELECT cost_units FROM jobs WHERE id = ?", (job.json()["id"],))[0][0]
        assert units == pytest.approx(4 * 1.5 * 64 * 64 / 512**2 + 2 * 2 * 2 * 2 * 64 * 64 / 512**2)  # the fair queue's cost
        done = wait_done(client, job.json()["id"], timeout=300)
        studio.events.unsubscribe(sub) if hasattr(studio.events, "unsubscribe") else None
        assert done["status"] == "done", done["error"]
        steps = []
        while not events.empty():
            event = events.get()
            if event.type == "step" and event.data.get("phase") == "train":
                steps.append(event.data)
        assert [s["step"] for s in steps] == [1, 2, 3, 4]
        assert all(isinstance(s["loss"], float) and len(s["losses"]) == s["step"] for s in steps)
        assert steps[1]["samples"] and steps[1]["samples"][0]["with"].startswith("data:image/webp")
        result = done["result"]
        assert result["steps"] == 4 and result["resumed_from"] == 0 and len(result["samples"]) == 2
        assert (studio.home.outputs / result["folder"] / result["samples"][0]["with"]).is_file()
        lora = studio.home.model_dir("lora") / "local" / "redsq_thing.safetensors"
        assert lora.is_file()
        models = {m["name"]: m for m in client.get("/api/models?kind=lora").json()}
        trained = models[result["name"]]["provenance"]["trained"]
        assert trained["trained_by"] == "local" and trained["dataset"]["pictures"] == 2
        assert trained["dataset"]["source"] == "drawn by the test, mine" and trained["base_model"] == "tiny-sd1"
        generate = client.post("/api/jobs", json={"prompt": f"redsq_thing {result['prompt_tag']}", "model": "tiny-sd1",
                                                  "steps": 2, "width": 64, "height": 64, "seed": 3})
        assert generate.status_code == 201, generate.text
        assert wait_done(client, generate.json()["id"], timeout=120)["status"] == "done"
        again = client.post("/api/train/estimate", json={**TRAIN, "dataset": dataset["id"]}).json()
        assert again["basis"] == "training runs" and again["seconds"] > 0


def test_datasets_are_their_owners_and_participants_train_only_when_allowed(studio):
    with class_client(studio, start_worker=False) as client:
        dataset = make_dataset(client, ANN)
        assert client.get(f"/api/datasets/{dataset['id']}", headers=BEN).status_code == 404
        assert client.patch(f"/api/datasets/{dataset['id']}", json={"captions": ["x", "y"]}, headers=BEN).status_code == 404
        assert client.get("/api/datasets", headers=BEN).json() == []
        assert client.get(f"/api/datasets/{dataset['id']}", headers=TEACHER).status_code == 200
        patched = client.patch(f"/api/datasets/{dataset['id']}", json={"captions": ["one", "two"], "crops": [[0, 0, 32, 32], None]},
                               headers=ANN)
        assert [p["caption"] for p in patched.json()["pictures"]] == ["one", "two"]
        bad = client.patch(f"/api/datasets/{dataset['id']}", json={"crops": [[0, 0, 900, 32], None]}, headers=ANN)
        assert bad.status_code == 422 and bad.json()["field"] == "crops"
        one = client.post("/api/datasets", json={"name": "x", "pictures": [{"ref": dataset["pictures"][0]["ref"]}]}, headers=ANN)
        assert one.status_code == 422 and one.json()["field"] == "pictures"
        stolen = client.post("/api/datasets", json={"name": "x", "pictures": [{"ref": p["ref"]} for p in dataset["pictures"]]},
                             headers=BEN)
        assert stolen.status_code == 404  # another's uploads are not theirs to use

        refused = client.post("/api/train", json={**TRAIN, "dataset": dataset["id"]}, headers=ANN)
        assert refused.status_code == 403 and "not open to participants" in refused.json()["detail"]
        limits = client.get("/api/class/limits", headers=TEACHER).json()
        limits["participant"].update(may_train=True, max_train_steps=3)
        assert client.put("/api/class/limits", json=limits, headers=TEACHER).status_code == 200
        over = client.post("/api/train", json={**TRAIN, "dataset": dataset["id"]}, headers=ANN)
        assert over.status_code == 422 and over.json()["field"] == "steps" and "at most 3" in over.json()["detail"]
        three = {**TRAIN, "settings": {**TRAIN["settings"], "steps": 3}, "dataset": dataset["id"]}
        for change, field in (({"settings": {**three["settings"], "resolution": 2048}}, "resolution"),
                              ({"sample_size": 2048}, "sample_size"), ({"sample_steps": 150}, "sample_steps")):
            big = client.post("/api/train", json={**three, **change}, headers=ANN)
            assert big.status_code == 422 and big.json()["field"] == field, big.text
        ok = client.post("/api/train", json={**TRAIN, "settings": {**TRAIN["settings"], "steps": 3}, "dataset": dataset["id"]},
                         headers=ANN)
        assert ok.status_code == 201, ok.text
        assert client.post("/api/train", json={**TRAIN, "dataset": dataset["id"]}, headers=BEN).status_code == 404
        assert client.delete(f"/api/datasets/{dataset['id']}", headers=BEN).status_code == 404
        assert client.delete(f"/api/datasets/{dataset['id']}", headers=ANN).status_code == 204
        assert client.get(f"/api/datasets/{dataset['id']}", headers=ANN).status_code == 404


@pytest.mark.timeout(600)
def test_a_kill_during_training_resumes_from_the_checkpoint(tmp_path, model_home):
    home = linked_home(tmp_path / "home", model_home)
    port, log = free_port(), tmp_path / "server.log"
    base = f"http://127.0.0.1:{port}"
    headers = {"X-Client-Id": "train-kill"}
    with server(home.root, port, log) as proc:
        client = httpx.Client(base_url=base, headers=headers, timeout=30)
        refs = [client.post("/api/uploads", files={"file": (f"p{i}.png", picture_png(i * 4), "image/png")}).json()["ref"]
                for i in range(2)]
        dataset = client.post("/api/datasets", json={"name": "d", "trigger": "redsq_thing", "pictures": [
            {"ref": r, "caption": "a red square"} for r in refs]}).json()
        settings = {**TRAIN["settings"], "steps": 150, "save_every": 1}
        job = client.post("/api/train", json={**TRAIN, "settings": settings, "sample_every": 1000, "dataset": dataset["id"]}).json()

        def past_step_3() -> bool:
            progress = client.get(f"/api/jobs/{job['id']}").json()["progress"] or {}
            return progress.get("phase") == "train" and progress.get("step", 0) >= 3

        wait_until(past_step_3, 300, "training to pass step 3", proc, log)
        proc.kill()  # SIGKILL: no shutdown code runs
        proc.wait(timeout=30)
    run = home.root / "training" / "local" / f"job-{job['id']}" / "run"
    state = json.loads((run / "state.json").read_text())
    killed_at = state["step"]
    assert killed_at >= 3 and (run / state["checkpoint"]).is_file()
    with server(home.root, port, log) as restarted:
        client = httpx.Client(base_url=base, headers=headers, timeout=30)
        done = wait_until(lambda: (j := client.get(f"/api/jobs/{job['id']}").json())["status"] in ("done", "failed") and j,
                          500, "the resumed training to finish", restarted, log)
    assert done["status"] == "done", done["error"]
    assert done["attempts"] == 2 and done["result"]["resumed_from"] >= killed_at  # the step counter went on
    assert done["result"]["steps"] == 150
    leftovers = [p for p in home.root.rglob("*") if ".tmp" in p.name]
    assert not leftovers, leftovers
    assert (home.model_dir("lora") / "local" / "redsq_thing.safetensors").is_file()


def test_another_participants_trained_files_stay_theirs_on_every_route(studio, sd1_folder):
    """Whichever route queues the job (the studio's, an A1111 client's, a comparison's prompt search/replace) and
    whichever list shows files, a LoRA or an embedding ann trained is hers: 404 for ben, as for one not here."""
    import torch
    from safetensors.torch import load_file, save_file

    from factories import build_lora

    record = json.dumps({"kind": "lora", "trained_by": "ann", "dataset": {"pictures": 2}})
    lora = studio.home.model_dir("lora") / "ann" / "ann_mira.safetensors"
    lora.parent.mkdir(parents=True)
    build_lora(sd1_folder, lora)
    save_file(load_file(str(lora)), str(lora), metadata={"localdiffusion.provenance": record})
    embedding = studio.home.model_dir("embedding") / "ann" / "annword.safetensors"
    embedding.parent.mkdir(parents=True)
    save_file({"emb_params": torch.zeros(1, 32)}, str(embedding),
              metadata={"localdiffusion.provenance": record.replace('"lora"', '"embedding"')})
    base = {"model": "tiny-sd1", "steps": 2, "width": 64, "height": 64}
    with class_client(studio, start_worker=False) as client:
        for prompt in ("a cat <lora:ann_mira:1>", "a cat annword"):
            assert client.post("/api/jobs", json={**base, "prompt": prompt}, headers=BEN).status_code == 404, prompt
            assert client.post("/api/jobs", json={**base, "prompt": prompt}, headers=ANN).status_code == 201, prompt
        a1111 = client.post("/sdapi/v1/txt2img", json={**base, "prompt": "a cat <lora:ann_mira:1>"}, headers=BEN)
        assert a1111.status_code == 404
        sweep = client.post("/api/compare", json={"recipe": {**base, "prompt": "a cat"}, "x": "prompt_sr=cat,cat <lora:ann_mira:1>",
                                                  "y": "seed=1,2"}, headers=BEN)
        assert sweep.status_code == 404
        assert "ann_mira" not in {m["name"] for m in client.get("/sdapi/v1/loras", headers=BEN).json()}
        listed = client.get("/sdapi/v1/embeddings", headers=BEN).json()
        assert "annword" not in {**listed["loaded"], **listed["skipped"]}
        assert "ann_mira" in {m["name"] for m in client.get("/sdapi/v1/loras", headers=ANN).json()}


def test_a_participants_trained_file_is_named_after_them():
    from localdiffusion.server.deps import Caller
    from localdiffusion.server.train import file_name

    assert file_name(Caller(2, "ann", "participant"), "mira") == "ann_mira"
    assert file_name(Caller(2, "ann", "participant"), "ann_mira") == "ann_mira"
    assert file_name(Caller(1, "local", "owner"), "mira") == "mira"
