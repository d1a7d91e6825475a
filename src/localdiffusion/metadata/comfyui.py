"""ComfyUI: the API-format graph in the `prompt` chunk (the `workflow` chunk is the UI layout).

Every KSampler / KSamplerAdvanced node becomes a SamplerPass. The main settings come from the
first pass on the way to a saved image: the pass that makes the image's seed and size (a
second pass on an upscaled latent, ComfyUI's "hires fix", stays in `passes`).
"""

from __future__ import annotations

import json
from typing import Any

from localdiffusion.metadata._util import as_text, to_float, to_int
from localdiffusion.metadata.container import Container
from localdiffusion.metadata.samplers import from_comfy
from localdiffusion.metadata.types import ImageMetadata, SamplerPass

Graph = dict[str, dict[str, Any]]

SAMPLERS = {"KSampler", "KSamplerAdvanced"}
# Inputs that carry the image (or its latent) downstream-to-upstream, in the order to follow them.
_IMAGE_INPUTS = ("images", "image", "samples", "samples_to", "latent_image", "latent", "pixels")
_CONSUMED = {"seed", "noise_seed", "steps", "cfg", "model", "positive", "negative", "latent_image"}


def read(c: Container) -> ImageMetadata | None:
    graph = _load_graph(c.texts.get("prompt"))
    if graph is None:
        return ImageMetadata(source="comfyui") if "workflow" in c.texts else None
    passes = [read_pass(graph, node_id) for node_id in _sampler_ids(graph)]
    main = _main_sampler(graph)
    primary = next((p for p in passes if p.node == main), None)
    if primary is None:
        return ImageMetadata(source="comfyui", passes=passes)
    return ImageMetadata(
        source="comfyui", fields=dict(primary.fields), model_name=primary.model_name, extra=dict(primary.extra), passes=passes
    )


def _load_graph(text: str | None) -> Graph | None:
    try:
        graph = json.loads(text) if text else None
    except ValueError:
        return None
    if not isinstance(graph, dict) or not all(isinstance(n, dict) and "class_type" in n for n in graph.values()):
        return None
    return {str(k): v for k, v in graph.items()}


def _link(value: Any) -> tuple[str, int] | None:
    """A node input that is a link to another node's output: `["4", 1]`."""
    if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
        return str(value[0]), value[1]
    return None


def _inputs(graph: Graph, node_id: str) -> dict[str, Any]:
    inputs = graph.get(node_id, {}).get("inputs", {})
    return inputs if isinstance(inputs, dict) else {}


def _class(graph: Graph, node_id: str) -> str:
    return str(graph.get(node_id, {}).get("class_type", ""))


def _sampler_ids(graph: Graph) -> list[str]:
    ids = [k for k in graph if _class(graph, k) in SAMPLERS]
    return sorted(ids, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k))


def _main_sampler(graph: Graph) -> str | None:
    """The earliest sampler on the longest image chain that ends in an output node."""
    best: list[str] = []
    for node_id in graph:
        if _is_output(graph, node_id):
            chain = _samplers_upstream(graph, node_id)
            if len(chain) > len(best):
                best = chain
    if best:
        return best[-1]
    ids = _sampler_ids(graph)
    return ids[0] if ids else None


def _is_output(graph: Graph, node_id: str) -> bool:
    return "images" in _inputs(graph, node_id) and not any(_link(v) and k != "images" for k, v in _inputs(graph, node_id).items())


def _samplers_upstream(graph: Graph, node_id: str) -> list[str]:
    chain: list[str] = []
    seen: set[str] = set()
    current: str | None = node_id
    while current is not None and current not in seen:
        seen.add(current)
        if _class(graph, current) in SAMPLERS:
            chain.append(current)
        inputs = _inputs(graph, current)
        current = next((link[0] for name in _IMAGE_INPUTS if (link := _link(inputs.get(name)))), None)
    return chain


def read_pass(graph: Graph, node_id: str) -> SamplerPass:
    inputs = _inputs(graph, node_id)
    fields: dict[str, Any] = {}
    for key, field, convert in (("seed", "seed", to_int), ("noise_seed", "seed", to_int), ("steps", "steps", to_int), ("cfg", "cfg_scale", to_float)):
        value = convert(inputs.get(key))
        if value is not None:
            fields[field] = value
    sampler, scheduler = inputs.get("sampler_name"), inputs.get("scheduler")
    fields.update(from_comfy(sampler if isinstance(sampler, str) else None, scheduler if isinstance(scheduler, str) else None))
    denoise = to_float(inputs.get("denoise"))
    if denoise is not None and denoise != 1.0:
        fields["denoising_strength"] = denoise
    for key, field in (("positive", "prompt"), ("negative", "negative_prompt")):
        texts = _texts(graph, _link(inputs.get(key)), set())
        if texts:
            fields[field] = " AND ".join(texts)
    fields.update(_latent_size(graph, _link(inputs.get("latent_image")), set()))
    clip_skip = _clip_skip(graph, _link(inputs.get("positive")))
    if clip_skip:
        fields["clip_skip"] = clip_skip
    model_name, loras = _model(graph, _link(inputs.get("model")))
    extra = {"node": node_id, "class_type": _class(graph, node_id)}
    extra.update({k: as_text(v) for k, v in inputs.items() if k not in _CONSUMED and not _link(v)})
    if loras:
        extra["loras"] = ", ".join(loras)
    return SamplerPass(node=node_id, class_type=_class(graph, node_id), fields=fields, model_name=model_name, extra=extra)


def _texts(graph: Graph, link: tuple[str, int] | None, seen: set[str]) -> list[str]:
    """The prompt texts that feed a conditioning input, in graph order, without repeats."""
    if link is None or link[0] in seen or link[0] not in graph:
        return []
    node_id, slot = link
    seen.add(node_id)
    inputs = _inputs(graph, node_id)
    own = _own_text(graph, inputs)
    if own is not None:
        return [own] if own else []
    if "positive" in inputs and "negative" in inputs:  # ControlNetApplyAdvanced and the like
        return _texts(graph, _link(inputs["negative" if slot == 1 else "positive"]), seen)
    texts: list[str] = []
    for name, value in inputs.items():
        if "conditioning" in name:
            for text in _texts(graph, _link(value), seen):
                if text not in texts:
                    texts.append(text)
    return texts


def _own_text(graph: Graph, inputs: dict[str, Any]) -> str | None:
    for name in ("text", "text_g", "text_l", "prompt"):
        value = inputs.get(name)
        if isinstance(value, str):
            return value.strip()
        if (link := _link(value)) is not None:  # text from a primitive/string node
            source = _inputs(graph, link[0])
            found = next((v for v in source.values() if isinstance(v, str)), None)
            if found is not None:
                return found.strip()
    return None


def _latent_size(graph: Graph, link: tuple[str, int] | None, seen: set[str]) -> dict[str, int]:
    """Width, height (and batch size) of the latent a sampler starts from; none for an encoded image."""
    if link is None or link[0] in seen:
        return {}
    node_id = link[0]
    seen.add(node_id)
    kind, inputs = _class(graph, node_id), _inputs(graph, node_id)
    width, height = to_int(inputs.get("width")), to_int(inputs.get("height"))
    if kind.startswith("Empty") and "Latent" in kind and width and height:
        size = {"width": width, "height": height}
        if (batch := to_int(inputs.get("batch_size"))) is not None:
            size["batch_size"] = batch
        return size
    if kind == "LatentUpscale" and width and height:
        return {"width": width, "height": height}
    for name in ("samples", "samples_to", "latent_image", "latent"):
        if (up := _link(inputs.get(name))) is not None:
            size = _latent_size(graph, up, seen)
            if kind in SAMPLERS:  # a later pass does not set the batch size
                size.pop("batch_size", None)
            return size
    return {}


def _clip_skip(graph: Graph, positive: tuple[str, int] | None) -> int | None:
    """A1111's Clip skip from a CLIPSetLastLayer node between the text encoder and the checkpoint."""
    encoder = _first_encoder(graph, positive, set())
    current = _link(_inputs(graph, encoder).get("clip")) if encoder else None
    seen: set[str] = set()
    while current is not None and current[0] not in seen:
        seen.add(current[0])
        inputs = _inputs(graph, current[0])
        if _class(graph, current[0]) == "CLIPSetLastLayer":
            layer = to_int(inputs.get("stop_at_clip_layer"))
            return -layer if layer is not None and layer < 0 else None
        current = _link(inputs.get("clip"))
    return None


def _first_encoder(graph: Graph, link: tuple[str, int] | None, seen: set[str]) -> str | None:
    if link is None or link[0] in seen:
        return None
    seen.add(link[0])
    inputs = _inputs(graph, link[0])
    if "clip" in inputs:
        return link[0]
    for name, value in inputs.items():
        if "conditioning" in name or name in ("positive", "negative"):
            found = _first_encoder(graph, _link(value), seen)
            if found:
                return found
    return None


def _model(graph: Graph, link: tuple[str, int] | None) -> tuple[str | None, list[str]]:
    """The checkpoint behind a sampler's model input, and the LoRAs applied on the way."""
    loras: list[str] = []
    seen: set[str] = set()
    while link is not None and link[0] not in seen:
        seen.add(link[0])
        inputs = _inputs(graph, link[0])
        for key in ("ckpt_name", "unet_name"):
            if isinstance(inputs.get(key), str):
                return inputs[key], loras
        if isinstance(inputs.get("lora_name"), str):
            loras.append(f"{inputs['lora_name']}: {as_text(inputs.get('strength_model', 1.0))}")
        link = _link(inputs.get("model"))
    return None, loras
