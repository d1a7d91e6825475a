"""Export to ComfyUI: a recipe's API graph reads back through our own ComfyUI reader into the same settings,
every node uses ComfyUI's own input names, the UI graph is consistent, and what cannot be carried is said."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from cli_runner import run_cli
from localdiffusion.interop.comfyui import comfy_workflow, ui_workflow
from localdiffusion.metadata import read_image_metadata
from localdiffusion.metadata.comfyui import read
from localdiffusion.metadata.container import Container
from localdiffusion.prompts.attention import parse_attention
from localdiffusion.recipe import ControlUnit, Recipe
from localdiffusion.store.png import png_with_metadata

# The inputs of ComfyUI's core nodes (nodes.py INPUT_TYPES "required", comfy_extras/nodes_images.py for
# ImagePadForOutpaint) and their RETURN_TYPES, transcribed from ComfyUI's source as the independent check.
COMFY_CORE = {
    "CheckpointLoaderSimple": ({"ckpt_name"}, ("MODEL", "CLIP", "VAE")),
    "LoraLoader": ({"model", "clip", "lora_name", "strength_model", "strength_clip"}, ("MODEL", "CLIP")),
    "CLIPSetLastLayer": ({"clip", "stop_at_clip_layer"}, ("CLIP",)),
    "CLIPTextEncode": ({"text", "clip"}, ("CONDITIONING",)),
    "EmptyLatentImage": ({"width", "height", "batch_size"}, ("LATENT",)),
    "KSampler": ({"model", "seed", "steps", "cfg", "sampler_name", "scheduler", "positive", "negative", "latent_image",
                  "denoise"}, ("LATENT",)),
    "VAEDecode": ({"samples", "vae"}, ("IMAGE",)),
    "VAEEncode": ({"pixels", "vae"}, ("LATENT",)),
    "SaveImage": ({"images", "filename_prefix"}, ()),
    "LoadImage": ({"image"}, ("IMAGE", "MASK")),
    "LoadImageMask": ({"image", "channel"}, ("MASK",)),
    "InvertMask": ({"mask"}, ("MASK",)),
    "ImageScale": ({"image", "upscale_method", "width", "height", "crop"}, ("IMAGE",)),
    "ImageScaleBy": ({"image", "upscale_method", "scale_by"}, ("IMAGE",)),
    "ImagePadForOutpaint": ({"image", "left", "top", "right", "bottom", "feathering"}, ("IMAGE", "MASK")),
    "SetLatentNoiseMask": ({"samples", "mask"}, ("LATENT",)),
    "RepeatLatentBatch": ({"samples", "amount"}, ("LATENT",)),
    "LatentUpscaleBy": ({"samples", "upscale_method", "scale_by"}, ("LATENT",)),
    "ControlNetLoader": ({"control_net_name"}, ("CONTROL_NET",)),
    "ControlNetApplyAdvanced": ({"positive", "negative", "control_net", "image", "strength", "start_percent", "end_percent"},
                                ("CONDITIONING", "CONDITIONING")),
}
KSAMPLER_SAMPLERS = {"euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive",
                     "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m_sde", "ddim", "uni_pc", "lcm"}
KSAMPLER_SCHEDULERS = {"normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform", "beta", "kl_optimal"}


def assert_valid(api: dict) -> None:
    """Every node is a core node with exactly its inputs; every link names an existing node's output slot."""
    for node_id, node in api.items():
        names, _ = COMFY_CORE[node["class_type"]]
        assert set(node["inputs"]) == names, (node_id, node["class_type"])
        for value in node["inputs"].values():
            if isinstance(value, list):
                source, slot = value
                assert source in api and slot < len(COMFY_CORE[api[source]["class_type"]][1]), (node_id, value)
        if node["class_type"] == "KSampler":
            assert node["inputs"]["sampler_name"] in KSAMPLER_SAMPLERS and node["inputs"]["scheduler"] in KSAMPLER_SCHEDULERS


def read_back(api: dict):
    return read(Container(Image.new("RGB", (8, 8)), {"prompt": json.dumps(api)}))


RECIPE = Recipe(prompt="a (red:1.2) lighthouse, [fog] <lora:ink_style:0.7>", negative_prompt="blurry, (text:1.3)",
                seed=1234, steps=24, cfg_scale=6.5, sampler_name="DPM++ 2M", scheduler="Karras", width=640, height=448,
                batch_size=2, clip_skip=2, model="dreamy")


def test_the_api_graph_reads_back_into_the_same_settings():
    workflow = comfy_workflow(RECIPE, checkpoint="dreamy_v2.safetensors", lora_files={"ink_style": "ink_style.safetensors"})
    assert_valid(workflow.api)
    meta = read_back(workflow.api)
    expected = {"seed": 1234, "steps": 24, "cfg_scale": 6.5, "sampler_name": "DPM++ 2M", "scheduler": "Karras",
                "width": 640, "height": 448, "batch_size": 2, "clip_skip": 2}
    assert {k: meta.fields[k] for k in expected} == expected
    assert meta.model_name == "dreamy_v2.safetensors" and meta.extra["loras"] == "ink_style.safetensors: 0.7"
    # the same words with the same weights (A1111's [fog] is written as ComfyUI's explicit (fog:0.9091))
    def weights(text):
        return [(piece.strip(" ,"), round(w, 3)) for piece, w in parse_attention(text) if piece.strip(" ,")]
    assert weights(meta.fields["prompt"]) == weights("a (red:1.2) lighthouse, [fog]")
    assert weights(meta.fields["negative_prompt"]) == weights(RECIPE.negative_prompt)


def test_automatic_schedule_becomes_the_samplers_own_and_unknown_samplers_are_said():
    api = comfy_workflow(Recipe(prompt="x", sampler_name="DPM++ 2M SDE", scheduler="Automatic")).api
    sampler = next(n for n in api.values() if n["class_type"] == "KSampler")["inputs"]
    assert (sampler["sampler_name"], sampler["scheduler"]) == ("dpmpp_2m_sde", "exponential")  # A1111's default for it
    euler_a = comfy_workflow(Recipe(prompt="x", sampler_name="Euler a"))  # Automatic: A1111's Uniform
    assert not any("schedule" in note for note in euler_a.notes)
    assert next(n for n in euler_a.api.values() if n["class_type"] == "KSampler")["inputs"]["scheduler"] == "normal"
    workflow = comfy_workflow(Recipe(prompt="x", sampler_name="Restart", scheduler="Polyexponential"))
    assert any("no 'Restart' sampler" in n for n in workflow.notes)
    assert any("no 'Polyexponential' schedule" in n for n in workflow.notes)
    assert_valid(workflow.api)


def test_hires_fix_is_a_second_ksampler_on_the_upscaled_latent_and_the_reader_keeps_the_first_pass():
    recipe = Recipe(prompt="a castle", seed=7, steps=20, width=512, height=512, enable_hr=True, hr_scale=1.5,
                    hr_second_pass_steps=10, denoising_strength=0.55)
    api = comfy_workflow(recipe).api
    assert_valid(api)
    samplers = [n for n in api.values() if n["class_type"] == "KSampler"]
    assert [s["inputs"]["steps"] for s in samplers] == [20, 10] and samplers[1]["inputs"]["denoise"] == 0.55
    upscale = next(n for n in api.values() if n["class_type"] == "LatentUpscaleBy")
    assert upscale["inputs"]["scale_by"] == 1.5
    meta = read_back(api)
    assert (meta.fields["steps"], meta.fields["width"], len(meta.passes)) == (20, 512, 2)


def test_img2img_inpainting_and_controlnet_load_their_pictures():
    recipe = Recipe(prompt="a boat", mode="inpaint", init_image="inputs/aa11.png", mask="inputs/bb22.png",
                    denoising_strength=0.6, width=512, height=512, mask_blur=0,
                    controls=[ControlUnit(model="control_openpose", image="inputs/cc33.png", map="inputs/dd44.png",
                                          module="openpose", weight=0.8, guidance_end=0.9)])
    workflow = comfy_workflow(recipe, control_files={"control_openpose": "control_v11p_sd15_openpose.safetensors"})
    assert_valid(workflow.api)
    kinds = [n["class_type"] for n in workflow.api.values()]
    assert {"LoadImage", "LoadImageMask", "SetLatentNoiseMask", "VAEEncode", "ControlNetApplyAdvanced"} <= set(kinds)
    assert set(workflow.pictures) == {"aa11.png", "bb22.png", "dd44.png"}  # the map that was made, not its source
    apply = next(n for n in workflow.api.values() if n["class_type"] == "ControlNetApplyAdvanced")["inputs"]
    assert (apply["strength"], apply["end_percent"]) == (0.8, 0.9)
    sampler = next(n for n in workflow.api.values() if n["class_type"] == "KSampler")["inputs"]
    assert sampler["denoise"] == 0.6
    assert read_back(workflow.api).fields["denoising_strength"] == 0.6


def test_settings_without_a_comfyui_equivalent_are_said_never_dropped_silently():
    recipe = Recipe(prompt="a [cat:dog:0.5] in a [red|blue] room AND a moon", subseed=5, subseed_strength=0.3,
                    refiner_checkpoint="refiner", n_iter=3, references=[{"image": "inputs/ee55.png"}])
    notes = comfy_workflow(recipe).notes
    for words in ("prompt editing or alternation", "AND (composable", "Variation seeds", "refiner", "IP-Adapter",
                  "queue the workflow 3 times"):
        assert any(words in note for note in notes), words


def test_the_ui_graph_is_consistent_and_carries_the_notes():
    workflow = comfy_workflow(RECIPE)
    ui = ui_workflow(workflow.api, workflow.notes)
    nodes = {node["id"]: node for node in ui["nodes"]}
    assert ui["last_node_id"] == max(nodes) and ui["last_link_id"] == len(ui["links"])
    for link_id, source, slot, target, target_slot, kind in ui["links"]:
        assert link_id in nodes[source]["outputs"][slot]["links"]
        assert nodes[target]["inputs"][target_slot]["link"] == link_id and nodes[target]["inputs"][target_slot]["type"] == kind
    sampler = next(n for n in ui["nodes"] if n["type"] == "KSampler")
    assert sampler["widgets_values"] == [1234, "fixed", 24, 6.5, "dpmpp_2m", "karras", 1.0]
    note = next(n for n in ui["nodes"] if n["type"] == "Note")
    assert "weighs prompt emphasis" in note["widgets_values"][0]


def test_cli_exports_an_image_in_both_formats_and_refuses_bad_input(capsys, tmp_path):
    png = tmp_path / "made.png"
    png.write_bytes(png_with_metadata(Image.new("RGB", (64, 64)), "a lighthouse\nSteps: 12, Seed: 99", RECIPE.to_json()))
    code, stdout, stderr = run_cli(capsys, "export-comfyui", png, "-o", tmp_path / "flow.json", "--home", tmp_path / "home")
    assert code == 0 and stdout.strip() == str(tmp_path / "flow.json") and "Note:" in stderr
    ui = json.loads((tmp_path / "flow.json").read_text())
    assert any(n["type"] == "KSampler" for n in ui["nodes"])
    code, _, _ = run_cli(capsys, "export-comfyui", png, "-o", tmp_path / "api.json", "--format", "api", "--home", tmp_path / "home")
    api = json.loads((tmp_path / "api.json").read_text())
    assert code == 0 and read_back(api).fields["seed"] == 1234
    recipe_file = tmp_path / "recipe.json"
    recipe_file.write_text(RECIPE.to_json())
    assert run_cli(capsys, "export-comfyui", recipe_file, "-o", tmp_path / "r.json", "--home", tmp_path / "home")[0] == 0

    code, _, stderr = run_cli(capsys, "export-comfyui", png, "-o", tmp_path / "x.json", "--format", "xml", "--home", tmp_path / "home")
    assert code != 0 and "Unknown --format 'xml'; use 'ui' or 'api'." in stderr and "Traceback" not in stderr
    blank = tmp_path / "blank.png"
    Image.new("RGB", (8, 8)).save(blank)
    code, _, stderr = run_cli(capsys, "export-comfyui", blank, "-o", tmp_path / "y.json", "--home", tmp_path / "home")
    assert code != 0 and "holds no generation settings" in stderr and not (tmp_path / "y.json").exists()


@pytest.mark.parametrize("fmt", ["api", "ui"])
def test_the_png_chunks_are_the_ones_comfyui_writes(fmt):
    workflow = comfy_workflow(RECIPE)
    chunks = workflow.png_chunks()
    assert set(chunks) == {"prompt", "workflow"}
    data = png_with_metadata(Image.new("RGB", (8, 8)), "x", None)
    assert read_image_metadata(data).source != "comfyui"  # only with the chunks
    assert json.loads(chunks["prompt"]) == workflow.as_format("api") and json.loads(chunks["workflow"])["nodes"]
    assert workflow.as_format(fmt)


def test_a_gallery_image_downloads_as_a_workflow_for_its_owner_only(tmp_path):
    from fastapi.testclient import TestClient

    from localdiffusion.server.app import create_app
    from localdiffusion.server.studio import Studio
    from localdiffusion.store.home import Home
    from test_accounts import add_class, basic

    home = Home(tmp_path / "home").ensure()
    add_class(home)
    with TestClient(create_app(Studio.open(home), start_worker=False)) as client:
        studio = client.app.state.studio
        path = home.outputs / "ann.png"
        Image.new("RGB", (64, 64)).save(path)
        image_id = studio.db.add_image(path=path, recipe_json=RECIPE.to_json(), width=64, height=64, prompt=RECIPE.prompt,
                                       owner_id=studio.accounts.get("ann").owner_id)
        answer = client.get(f"/api/images/{image_id}/comfyui?download=true", headers=basic("ann"))
        assert answer.status_code == 200 and "attachment" in answer.headers["content-disposition"]
        assert any(node["type"] == "Note" for node in answer.json()["nodes"])
        api = client.get(f"/api/images/{image_id}/comfyui?format=api", headers=basic("ann")).json()
        assert read_back(api).fields["steps"] == 24
        assert client.get(f"/api/images/{image_id}/comfyui", headers=basic("bo")).status_code == 404
        assert client.get(f"/api/images/{image_id}/comfyui?format=xml", headers=basic("ann")).status_code == 422
