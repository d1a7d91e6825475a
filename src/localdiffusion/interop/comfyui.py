"""A recipe as a ComfyUI workflow, in both of ComfyUI's formats.

- The **API format** is what ComfyUI queues (`POST /prompt`) and writes in a PNG's `prompt` chunk: a dict of
  node id -> {"class_type", "inputs"}, where an input that comes from another node is `[node id, output slot]`.
- The **UI format** is the graph ComfyUI's editor loads when a PNG or a JSON file is dropped on it (a PNG's
  `workflow` chunk): nodes with positions, widget values in the order the editor shows them, and links.

Only ComfyUI's core nodes are used. A setting with no ComfyUI equivalent (A1111 prompt editing, variation
seeds, a refiner, IP-Adapter, ...) is never dropped silently: `Workflow.notes` says what differs, and the UI
format carries the notes in a Note node. The export reads the recipe and returns data; it writes no file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from localdiffusion.engine.samplers import resolve_sampler
from localdiffusion.errors import BadInput, ModelNotFound
from localdiffusion.metadata.samplers import COMFY_SAMPLERS, COMFY_SCHEDULERS
from localdiffusion.prompts.attention import parse_attention
from localdiffusion.prompts.extra_networks import EXTRA_NETWORK, LORA_KINDS, extract_loras
from localdiffusion.prompts.schedule import schedule
from localdiffusion.recipe import Recipe

FORMATS = ("api", "ui")
Link = list[Any]  # [node id, output slot]


@dataclass(frozen=True)
class NodeType:
    """A core node as ComfyUI defines it: linked inputs (name, type), widgets in the editor's order, outputs."""

    inputs: tuple[tuple[str, str], ...] = ()
    widgets: tuple[str, ...] = ()
    outputs: tuple[tuple[str, str], ...] = ()


_MODEL, _CLIP, _VAE = ("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")
_COND, _LATENT, _IMAGE, _MASK = ("CONDITIONING", "CONDITIONING"), ("LATENT", "LATENT"), ("IMAGE", "IMAGE"), ("MASK", "MASK")

# The input names of ComfyUI's nodes.py (and comfy_extras for ImagePadForOutpaint); tests check graphs against it.
NODE_TYPES: dict[str, NodeType] = {
    "CheckpointLoaderSimple": NodeType((), ("ckpt_name",), (_MODEL, _CLIP, _VAE)),
    "LoraLoader": NodeType((("model", "MODEL"), ("clip", "CLIP")), ("lora_name", "strength_model", "strength_clip"), (_MODEL, _CLIP)),
    "CLIPSetLastLayer": NodeType((("clip", "CLIP"),), ("stop_at_clip_layer",), (_CLIP,)),
    "CLIPTextEncode": NodeType((("clip", "CLIP"),), ("text",), (_COND,)),
    "EmptyLatentImage": NodeType((), ("width", "height", "batch_size"), (_LATENT,)),
    "LoadImage": NodeType((), ("image",), (_IMAGE, _MASK)),
    "LoadImageMask": NodeType((), ("image", "channel"), (_MASK,)),
    "InvertMask": NodeType((("mask", "MASK"),), (), (_MASK,)),
    "ImageScale": NodeType((("image", "IMAGE"),), ("upscale_method", "width", "height", "crop"), (_IMAGE,)),
    "ImageScaleBy": NodeType((("image", "IMAGE"),), ("upscale_method", "scale_by"), (_IMAGE,)),
    "ImagePadForOutpaint": NodeType((("image", "IMAGE"),), ("left", "top", "right", "bottom", "feathering"), (_IMAGE, _MASK)),
    "VAEEncode": NodeType((("pixels", "IMAGE"), ("vae", "VAE")), (), (_LATENT,)),
    "SetLatentNoiseMask": NodeType((("samples", "LATENT"), ("mask", "MASK")), (), (_LATENT,)),
    "RepeatLatentBatch": NodeType((("samples", "LATENT"),), ("amount",), (_LATENT,)),
    "ControlNetLoader": NodeType((), ("control_net_name",), (("CONTROL_NET", "CONTROL_NET"),)),
    "ControlNetApplyAdvanced": NodeType(
        (("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("control_net", "CONTROL_NET"), ("image", "IMAGE")),
        ("strength", "start_percent", "end_percent"), (("positive", "CONDITIONING"), ("negative", "CONDITIONING"))),
    "KSampler": NodeType(
        (("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("latent_image", "LATENT")),
        ("seed", "steps", "cfg", "sampler_name", "scheduler", "denoise"), (_LATENT,)),
    "LatentUpscaleBy": NodeType((("samples", "LATENT"),), ("upscale_method", "scale_by"), (_LATENT,)),
    "VAEDecode": NodeType((("samples", "LATENT"), ("vae", "VAE")), (), (_IMAGE,)),
    "SaveImage": NodeType((("images", "IMAGE"),), ("filename_prefix",), ()),
}
# Widgets the editor shows besides the node's inputs, in place: (node type, after which widget, value).
_EDITOR_WIDGETS = {("KSampler", "seed"): "fixed", ("LoadImage", "image"): "image", ("LoadImageMask", "channel"): "image"}

_LATENT_UPSCALE = {"Latent": "nearest-exact", "Latent (antialiased)": "bilinear", "Latent (bicubic)": "bicubic",
                   "Latent (bicubic antialiased)": "bicubic", "Latent (nearest)": "nearest-exact",
                   "Latent (nearest-exact)": "nearest-exact"}
_COMFY_SAMPLER = {a1111: comfy for comfy, a1111 in reversed(COMFY_SAMPLERS.items()) if not comfy.endswith("_gpu")}
# A1111's "Uniform" (k-diffusion's own sigmas: the model's timesteps, evenly spaced) is what ComfyUI's "normal" does.
_COMFY_SCHEDULER = {a1111: comfy for comfy, a1111 in COMFY_SCHEDULERS.items()} | {"Uniform": "normal"}
_KSAMPLER_SCHEDULERS = {"normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform", "beta", "kl_optimal"}


@dataclass
class Workflow:
    """A recipe's ComfyUI graph (API format), what differs from the recipe, and the pictures it loads."""

    api: dict[str, dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    pictures: dict[str, str] = field(default_factory=dict)  # LoadImage file name -> the recipe's picture ref

    def as_format(self, fmt: str) -> dict[str, Any]:
        if fmt not in FORMATS:
            raise BadInput(f"Unknown workflow format '{fmt}'; use 'api' or 'ui'.", field="format")
        return self.api if fmt == "api" else ui_workflow(self.api, self.notes)

    def png_chunks(self) -> dict[str, str]:
        """The `prompt` and `workflow` text chunks ComfyUI writes in its PNGs."""
        return {"prompt": json.dumps(self.api), "workflow": json.dumps(ui_workflow(self.api, self.notes))}


class _Graph:
    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}

    def add(self, class_type: str, **inputs: Any) -> str:
        node_type = NODE_TYPES[class_type]
        known = {name for name, _ in node_type.inputs} | set(node_type.widgets)
        assert set(inputs) <= known, (class_type, set(inputs) - known)
        node_id = str(len(self.nodes) + 1)
        self.nodes[node_id] = {"inputs": inputs, "class_type": class_type, "_meta": {"title": class_type}}
        return node_id


def comfy_workflow(recipe: Recipe, checkpoint: str | None = None, lora_files: dict[str, str] | None = None,
                   embeddings: set[str] | frozenset[str] = frozenset(), control_files: dict[str, str] | None = None) -> Workflow:
    """The recipe as ComfyUI core nodes. `checkpoint` is the checkpoint's file name under ComfyUI's
    models/checkpoints (default: the recipe's model name); `lora_files` and `control_files` map names to file
    names; `embeddings` are the textual-inversion names the prompts may use (ComfyUI writes `embedding:name`)."""
    graph, notes, pictures = _Graph(), [], {}
    width, height = recipe.width or 512, recipe.height or 512
    prompt, loras = extract_loras(recipe.prompt)
    loader = graph.add("CheckpointLoaderSimple", ckpt_name=checkpoint or f"{recipe.model or 'model'}.safetensors")
    model, clip, vae = [loader, 0], [loader, 1], [loader, 2]
    for lora in loras:
        name = (lora_files or {}).get(lora.name, f"{lora.name}.safetensors")
        node = graph.add("LoraLoader", model=model, clip=clip, lora_name=name, strength_model=lora.weight, strength_clip=lora.weight)
        model, clip = [node, 0], [node, 1]
    if recipe.clip_skip > 1:
        clip = [graph.add("CLIPSetLastLayer", clip=clip, stop_at_clip_layer=-recipe.clip_skip), 0]
    positive = [graph.add("CLIPTextEncode", clip=clip, text=comfy_prompt(prompt, recipe.steps, embeddings, notes, "prompt")), 0]
    negative_text, negative_loras = extract_loras(recipe.negative_prompt)
    if negative_loras:
        notes.append("LoRA tags in the negative prompt have no ComfyUI equivalent; they were left out.")
    negative = [graph.add("CLIPTextEncode", clip=clip,
                          text=comfy_prompt(negative_text, recipe.steps, embeddings, notes, "negative prompt")), 0]
    positive, negative = _controls(graph, recipe, positive, negative, control_files or {}, notes, pictures)
    latent, denoise = _start_latent(graph, recipe, vae, width, height, notes, pictures)
    sampler, scheduler = comfy_sampler(recipe, notes)
    latent = [graph.add("KSampler", model=model, seed=max(recipe.seed, 0), steps=recipe.steps, cfg=recipe.cfg_scale,
                        sampler_name=sampler, scheduler=scheduler, positive=positive, negative=negative,
                        latent_image=latent, denoise=denoise), 0]
    if recipe.enable_hr and recipe.mode == "txt2img":
        latent = _hires(graph, recipe, latent, model, positive, negative, vae, sampler, scheduler, notes)
    image = [graph.add("VAEDecode", samples=latent, vae=vae), 0]
    graph.add("SaveImage", images=image, filename_prefix="LocalDiffusion")
    notes.extend(_differences(recipe))
    return Workflow(graph.nodes, notes, pictures)


def workflow_for(recipe: Recipe, library: Any) -> Workflow:
    """The recipe's workflow with the file names of its models as this library has them (ComfyUI names models
    by their file under its models folders); a model that is not here keeps its name plus `.safetensors`."""
    notes = []

    def file_of(name: str | None, kind: str) -> str | None:
        try:
            info = library.get(name, kind=kind)
        except (ModelNotFound, BadInput):
            return None
        if info.path.is_dir():
            notes.append(f"'{info.name}' is a diffusers folder; ComfyUI's loaders need a single .safetensors file of it.")
        return info.path.name

    _, loras = extract_loras(recipe.prompt)
    lora_files = {lora.name: found for lora in loras if (found := file_of(lora.name, "lora"))}
    control_files = {unit.model: found for unit in recipe.controls if unit.model and (found := file_of(unit.model, "controlnet"))}
    embeddings = {info.name for info in library.list("embedding")}
    checkpoint = file_of(recipe.model, "checkpoint") if recipe.model else None
    family = _family(library, recipe.model)
    if family in ("sd3", "flux"):
        raise BadInput(f"Exporting to ComfyUI covers SD 1.x, SD 2.x and SDXL recipes; this one uses a "
                       f"{'FLUX' if family == 'flux' else 'SD 3.5'} model, whose ComfyUI graph needs other loaders.",
                       field="model")
    workflow = comfy_workflow(recipe, checkpoint, lora_files, embeddings, control_files)
    workflow.notes[:0] = notes
    return workflow


def _family(library: Any, name: str | None) -> str | None:
    try:
        return library.get(name, kind="checkpoint").family if name else None
    except (ModelNotFound, BadInput):
        return None


def comfy_prompt(text: str, steps: int, embeddings: set[str] | frozenset[str], notes: list[str], what: str) -> str:
    """A1111 prompt text as ComfyUI reads it: emphasis as explicit `(text:weight)`, literal brackets escaped,
    embeddings as `embedding:name`. Prompt editing and alternation keep the text of the first step."""
    others = [m.group(0) for m in EXTRA_NETWORK.finditer(text) if m.group(1) not in LORA_KINDS]
    if others:
        notes.append(f"The {what}'s {', '.join(others)} has no ComfyUI equivalent; it was left out.")
        text = EXTRA_NETWORK.sub("", text)
    texts = schedule(text, steps)
    if len(texts) > 1 or re.search(r"\[[^\]]*\|[^\]]*\]", text):
        notes.append(f"The {what} uses A1111 prompt editing or alternation, which ComfyUI does not have; the "
                     f"workflow uses the text of the first step.")
    first = texts[0][1] if texts else text
    if re.search(r"\bAND\b", first):
        notes.append(f"The {what} uses AND (composable diffusion), which ComfyUI's text encoder reads as a word.")
    pieces = []
    for piece, weight in parse_attention(first):
        if weight < 0:  # BREAK
            notes.append(f"The {what} uses BREAK, which ComfyUI does not have; it became a comma.")
            pieces.append(", ")
            continue
        piece = _embedding_names(piece.replace("(", r"\(").replace(")", r"\)"), embeddings)
        pieces.append(piece if abs(weight - 1.0) < 1e-6 else f"({piece}:{round(weight, 4):g})")
    return "".join(pieces).strip()


def _embedding_names(text: str, embeddings: set[str] | frozenset[str]) -> str:
    for name in sorted(embeddings, key=len, reverse=True):
        text = re.sub(rf"(?<![\w:]){re.escape(name)}(?!\w)", f"embedding:{name}", text)
    return text


def comfy_sampler(recipe: Recipe, notes: list[str]) -> tuple[str, str]:
    """ComfyUI's sampler and scheduler names for the recipe's (A1111's "Automatic" resolved to its schedule)."""
    try:
        sampler, label = resolve_sampler(recipe.sampler_name, recipe.scheduler)
    except BadInput:
        sampler, label = None, recipe.scheduler
    name = sampler.name if sampler is not None else recipe.sampler_name
    if label == "Automatic" and sampler is not None:
        label = sampler.automatic
    comfy = _COMFY_SAMPLER.get(name)
    if comfy is None:
        notes.append(f"ComfyUI has no '{name}' sampler; the workflow uses euler instead.")
        comfy = "euler"
    scheduler = _COMFY_SCHEDULER.get(label, "")
    if scheduler not in _KSAMPLER_SCHEDULERS:
        if not (sampler is not None and sampler.is_timestep_sampler):
            notes.append(f"ComfyUI's KSampler has no '{label}' schedule; the workflow uses normal instead.")
        scheduler = "ddim_uniform" if sampler is not None and sampler.is_timestep_sampler else "normal"
    return comfy, scheduler


def _picture(graph: _Graph, ref: str, pictures: dict[str, str]) -> str:
    name = PurePath(ref).name
    pictures[name] = ref
    return graph.add("LoadImage", image=name)


def _start_latent(graph: _Graph, recipe: Recipe, vae: Link, width: int, height: int, notes: list[str],
                  pictures: dict[str, str]) -> tuple[Link, float]:
    """The latent the first KSampler starts from, and its denoise."""
    if recipe.init_image is None:
        return [graph.add("EmptyLatentImage", width=width, height=height, batch_size=recipe.batch_size), 0], 1.0
    loaded = _picture(graph, recipe.init_image, pictures)
    image, mask = [loaded, 0], None
    if recipe.outpaint is not None and not recipe.outpaint.is_empty():
        o = recipe.outpaint
        padded = graph.add("ImagePadForOutpaint", image=image, left=o.left, top=o.up, right=o.right, bottom=o.down,
                           feathering=recipe.mask_blur)
        image, mask = [padded, 0], [padded, 1]
    else:
        image = [graph.add("ImageScale", image=image, upscale_method="lanczos", width=width, height=height, crop="center"), 0]
    latent = [graph.add("VAEEncode", pixels=image, vae=vae), 0]
    if recipe.mask is not None:
        mask = [_mask(graph, recipe.mask, pictures), 0]
        if recipe.inpainting_mask_invert:
            mask = [graph.add("InvertMask", mask=mask), 0]
        if recipe.inpainting_fill != 1:
            notes.append("A1111's masked-content modes other than 'original' have no ComfyUI equivalent; the "
                         "workflow keeps the original picture under the mask.")
        if recipe.inpaint_full_res:
            notes.append("'Inpaint only masked' has no core ComfyUI node; the workflow inpaints the whole picture.")
    if mask is not None:
        latent = [graph.add("SetLatentNoiseMask", samples=latent, mask=mask), 0]
    if recipe.batch_size > 1:
        latent = [graph.add("RepeatLatentBatch", samples=latent, amount=recipe.batch_size), 0]
    return latent, recipe.denoising_strength


def _mask(graph: _Graph, ref: str, pictures: dict[str, str]) -> str:
    name = PurePath(ref).name
    pictures[name] = ref
    return graph.add("LoadImageMask", image=name, channel="red")  # white is what changes, as A1111 paints it


def _controls(graph: _Graph, recipe: Recipe, positive: Link, negative: Link, files: dict[str, str], notes: list[str],
              pictures: dict[str, str]) -> tuple[Link, Link]:
    for i, unit in enumerate(recipe.controls):
        source = unit.map or unit.image
        if source is None:
            notes.append(f"ControlNet unit {i + 1} has no picture; it was left out.")
            continue
        if unit.map is None and unit.module != "none":
            notes.append(f"ControlNet unit {i + 1}'s preprocessor '{unit.module}' is not a core ComfyUI node; the "
                         f"workflow feeds its source picture directly (make the map first, or add a preprocessor node).")
        if unit.control_mode != "Balanced":
            notes.append(f"ControlNet unit {i + 1}'s control mode '{unit.control_mode}' has no ComfyUI equivalent.")
        name = files.get(unit.model, f"{unit.model or 'controlnet'}.safetensors")
        net = graph.add("ControlNetLoader", control_net_name=name)
        applied = graph.add("ControlNetApplyAdvanced", positive=positive, negative=negative, control_net=[net, 0],
                            image=[_picture(graph, source, pictures), 0], strength=unit.weight,
                            start_percent=unit.guidance_start, end_percent=unit.guidance_end)
        positive, negative = [applied, 0], [applied, 1]
    return positive, negative


def _hires(graph: _Graph, recipe: Recipe, latent: Link, model: Link, positive: Link, negative: Link, vae: Link,
           sampler: str, scheduler: str, notes: list[str]) -> Link:
    """A1111's hires fix as ComfyUI does it: upscale, then a second KSampler over the bigger picture."""
    method = _LATENT_UPSCALE.get(recipe.hr_upscaler)
    if method is not None:
        latent = [graph.add("LatentUpscaleBy", samples=latent, upscale_method=method, scale_by=recipe.hr_scale), 0]
    else:
        notes.append(f"The hires upscaler '{recipe.hr_upscaler}' became ComfyUI's lanczos resize; add an "
                     f"upscale-model node for the same upscaler.")
        image = [graph.add("VAEDecode", samples=latent, vae=vae), 0]
        image = [graph.add("ImageScaleBy", image=image, upscale_method="lanczos", scale_by=recipe.hr_scale), 0]
        latent = [graph.add("VAEEncode", pixels=image, vae=vae), 0]
    return [graph.add("KSampler", model=model, seed=max(recipe.seed, 0), steps=recipe.hr_second_pass_steps or recipe.steps,
                      cfg=recipe.cfg_scale, sampler_name=sampler, scheduler=scheduler, positive=positive,
                      negative=negative, latent_image=latent, denoise=recipe.denoising_strength), 0]


def _differences(recipe: Recipe) -> list[str]:
    """Settings of the recipe that the graph cannot carry, one sentence each."""
    notes = ["ComfyUI weighs prompt emphasis and draws its noise its own way, so the same settings give a similar "
             "picture, not the same one."]
    if recipe.seed < 0:
        notes.append("The recipe's seed is random (-1); the workflow uses seed 0.")
    if recipe.subseed_strength > 0:
        notes.append("Variation seeds have no core ComfyUI equivalent; the workflow uses the main seed alone.")
    if recipe.refiner_checkpoint:
        notes.append(f"The refiner '{recipe.refiner_checkpoint}' was left out; in ComfyUI, add a second checkpoint "
                     f"and a KSamplerAdvanced from step {recipe.refiner_switch_at:g} of the way.")
    if recipe.references:
        notes.append("IP-Adapter reference pictures need the ComfyUI_IPAdapter_plus nodes; they were left out.")
    if recipe.n_iter > 1:
        notes.append(f"The recipe makes {recipe.n_iter} batches; queue the workflow {recipe.n_iter} times in ComfyUI.")
    if recipe.enable_hr and recipe.mode != "txt2img":
        notes.append("Hires fix applies to txt2img only; it was left out.")
    if recipe.mask is not None and recipe.mask_blur and not (recipe.outpaint and not recipe.outpaint.is_empty()):
        notes.append(f"The mask blur ({recipe.mask_blur} px) has no core ComfyUI equivalent; the mask is used as painted.")
    if recipe.eta is not None or recipe.eta_noise_seed_delta or recipe.sgm_noise_multiplier or recipe.pad_cond_uncond:
        notes.append("A1111's eta, ENSD, SGM noise multiplier and pad-conds options have no ComfyUI equivalent.")
    return notes


# --- the UI format ------------------------------------------------------------------------------------------

def ui_workflow(api: dict[str, dict[str, Any]], notes: list[str]) -> dict[str, Any]:
    """The editor's graph for an API-format graph: every node placed in columns by its distance from the
    loaders, its widgets in the editor's order, every link listed; the notes in a Note node."""
    depth = _depths(api)
    rows: dict[int, int] = {}
    nodes, links = [], []
    incoming: dict[str, dict[str, int]] = {node_id: {} for node_id in api}
    outgoing: dict[tuple[str, int], list[int]] = {}
    for to_id, node in api.items():
        for name, value in node["inputs"].items():
            if _is_link(value):
                link_id = len(links) + 1
                from_id, slot = str(value[0]), value[1]
                kind = NODE_TYPES[api[from_id]["class_type"]].outputs[slot][1]
                to_slot = [n for n, _ in NODE_TYPES[node["class_type"]].inputs].index(name)
                links.append([link_id, int(from_id), slot, int(to_id), to_slot, kind])
                incoming[to_id][name] = link_id
                outgoing.setdefault((from_id, slot), []).append(link_id)
    for order, (node_id, node) in enumerate(api.items()):
        node_type = NODE_TYPES[node["class_type"]]
        column = depth[node_id]
        row = rows[column] = rows.get(column, -1) + 1
        nodes.append({
            "id": int(node_id), "type": node["class_type"], "pos": [40 + 340 * column, 40 + 220 * row], "size": [300, 160],
            "flags": {}, "order": order, "mode": 0,
            "inputs": [{"name": name, "type": kind, "link": incoming[node_id].get(name)} for name, kind in node_type.inputs],
            "outputs": [{"name": name, "type": kind, "links": outgoing.get((node_id, slot), []), "slot_index": slot}
                        for slot, (name, kind) in enumerate(node_type.outputs)],
            "properties": {"Node name for S&R": node["class_type"]},
            "widgets_values": _widget_values(node["class_type"], node["inputs"]),
        })
    if notes:
        nodes.append({"id": len(api) + 1, "type": "Note", "pos": [40, 40 + 220 * (rows.get(0, 0) + 1)], "size": [420, 220],
                      "flags": {}, "order": len(api), "mode": 0, "properties": {"text": ""},
                      "widgets_values": ["Exported by Local Diffusion. What differs from the recipe:\n- " + "\n- ".join(notes)]})
    return {"last_node_id": len(nodes), "last_link_id": len(links), "nodes": nodes, "links": links, "groups": [],
            "config": {}, "extra": {}, "version": 0.4}


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int) and isinstance(value[0], str)


def _widget_values(class_type: str, inputs: dict[str, Any]) -> list[Any]:
    values = []
    for name in NODE_TYPES[class_type].widgets:
        values.append(inputs[name])
        if (class_type, name) in _EDITOR_WIDGETS:
            values.append(_EDITOR_WIDGETS[(class_type, name)])
    return values


def _depths(api: dict[str, dict[str, Any]]) -> dict[str, int]:
    depth: dict[str, int] = {}

    def of(node_id: str) -> int:
        if node_id not in depth:
            ups = [str(v[0]) for v in api[node_id]["inputs"].values() if _is_link(v)]
            depth[node_id] = 1 + max((of(u) for u in ups), default=-1)
        return depth[node_id]

    for node_id in api:
        of(node_id)
    return depth
