"""SD3/3.5 and FLUX: flow-matching transformers from diffusers folders and single files, offline.

A diffusers folder (`StableDiffusion3Pipeline`, `FluxPipeline`) loads as it is (models/loader.py). A single
file holds the transformer alone, as ComfyUI users keep it in `models/unet` or `models/diffusion_models`, or
the transformer with its text encoders and VAE (all-in-one). Its parts come from the file where it has them,
else from the library: the text encoders (kind "text-encoder": `models/text_encoder`, ComfyUI's `models/clip`
or `models/text_encoders`) and a 16-channel VAE (`models/VAE`, ComfyUI's `models/vae`). The library's
encoders are picked by the widths the transformer listens to (SD3: CLIP-L + CLIP-G pooled = its pooled
width, the narrower being CLIP-L; FLUX: CLIP-L's width; both: T5's width = its joint attention width), so no
file name has to be right; names (`clip_l`, `clip_g`, `t5xxl`, `ae`) only break ties.

Configs: the shipped full-size ones (`configs/sd3`: SD3.5 Large; `configs/flux`: FLUX.1 dev, schnell
differing in its guidance embedder and scheduler), with everything the tensors show filled in
(`infer_transformer`, `infer_t5`, `architecture.infer_clip`). Weights are read from the files and put into
models built on the meta device, so nothing is held twice; the original layouts convert through diffusers'
own converters. Tokenizers: CLIP's is built offline (models/tokenizer.py); T5's needs its `tokenizer.json`,
in a folder named `t5_tokenizer` beside the T5 file or in `models/text_encoder` (ComfyUI ships one as
`comfy/text_encoders/t5_tokenizer`; every diffusers FLUX or SD3 repository has one in its tokenizer folder).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from localdiffusion.errors import ModelNotFound, UnsupportedModel
from localdiffusion.models.architecture import count_children, infer_clip, require_shape, standard_configs
from localdiffusion.models.detect import read_tensor_shapes, read_tensors
from localdiffusion.models.info import ModelInfo
from localdiffusion.models.keys import FLOW_TEXT, Shapes, first_shape, flow_transformer, has_prefix, text_encoder_family, vae_prefix
from localdiffusion.models.tokenizer import PAD_OPENCLIP, PAD_SD1, load_tokenizer

TOKENIZER_DIR = "t5_tokenizer"  # ComfyUI's name for T5's tokenizer folder
LABEL = {"sd3": "SD3.5", "flux": "FLUX"}
# The roles each family needs; the pipeline's component names for them.
ROLES = {"sd3": ("clip_l", "clip_g", "t5xxl"), "flux": ("clip_l", "t5xxl")}
COMPONENTS = {"sd3": {"clip_l": "text_encoder", "clip_g": "text_encoder_2", "t5xxl": "text_encoder_3"},
              "flux": {"clip_l": "text_encoder", "t5xxl": "text_encoder_2"}}
ROLE_NAMES = {"clip_l": "CLIP-L (clip_l)", "clip_g": "CLIP-G (clip_g)", "t5xxl": "T5-XXL (t5xxl)"}
SCHNELL_SCHEDULER = {"shift": 1.0, "use_dynamic_shifting": False}


@dataclass(frozen=True)
class Part:
    """Where one component's weights are: a file (with the prefix its keys carry) or a diffusers folder."""

    path: Path
    prefix: str = ""
    name: str = ""  # the library's name, for the infotext's `Module N` entries


@dataclass(frozen=True)
class Parts:
    """Everything a single-file SD3 or FLUX model loads from."""

    family: str
    layout: str  # the transformer's: "original" or "diffusers"
    transformer: Part
    text: dict[str, Part]  # by role: clip_l, clip_g, t5xxl
    vae: Part
    t5_tokenizer: Path  # a folder with tokenizer.json


# ---------------------------------------------------------------------------------------------
# Configs from shapes


def rope_axes(head: int) -> list[int]:
    """FLUX's rotary axes (the shapes do not show them): [16, 56, 56] for its 128-wide heads, the same
    proportions otherwise."""
    return [16, 56, 56] if head == 128 else [head // 8, 7 * head // 16, 7 * head // 16]


def infer_transformer(shapes: Shapes, family: str, layout: str, p: str, base: dict) -> dict:
    """The transformer's config: the family's shipped one with everything the tensors show filled in."""
    cfg = copy.deepcopy(base)
    if family == "flux":
        if layout == "original":
            img, txt, vec = (require_shape(shapes, p + k) for k in ("img_in.weight", "txt_in.weight", "vector_in.in_layer.weight"))
            head = require_shape(shapes, p + "double_blocks.0.img_attn.norm.query_norm.scale")[0]
            layers, single = count_children(shapes, p + "double_blocks."), count_children(shapes, p + "single_blocks.")
            guidance = has_prefix(shapes, p + "guidance_in.")
        else:
            img, txt, vec = (require_shape(shapes, p + k) for k in
                             ("x_embedder.weight", "context_embedder.weight", "time_text_embed.text_embedder.linear_1.weight"))
            head = require_shape(shapes, p + "transformer_blocks.0.attn.norm_q.weight")[0]
            layers, single = count_children(shapes, p + "transformer_blocks."), count_children(shapes, p + "single_transformer_blocks.")
            guidance = has_prefix(shapes, p + "time_text_embed.guidance_embedder.")
        cfg.update(in_channels=img[1], joint_attention_dim=txt[1], pooled_projection_dim=vec[1], attention_head_dim=head,
                   num_attention_heads=img[0] // head, num_layers=layers, num_single_layers=single, guidance_embeds=guidance,
                   axes_dims_rope=rope_axes(head))
        return cfg
    if layout == "original":
        x, ctx, pooled = (require_shape(shapes, p + k) for k in ("x_embedder.proj.weight", "context_embedder.weight", "y_embedder.mlp.0.weight"))
        pos, blocks = shapes.get(p + "pos_embed"), count_children(shapes, p + "joint_blocks.")
        qk = first_shape(shapes, p + "joint_blocks.0.x_block.attn.", "ln_q.weight")
        dual = [i for i in range(blocks) if has_prefix(shapes, p + f"joint_blocks.{i}.x_block.attn2.")]
        out = require_shape(shapes, p + "final_layer.linear.weight")
    else:
        x, ctx, pooled = (require_shape(shapes, p + k) for k in
                          ("pos_embed.proj.weight", "context_embedder.weight", "time_text_embed.text_embedder.linear_1.weight"))
        pos, blocks = shapes.get(p + "pos_embed.pos_embed"), count_children(shapes, p + "transformer_blocks.")
        qk = shapes.get(p + "transformer_blocks.0.attn.norm_q.weight")
        dual = [i for i in range(blocks) if has_prefix(shapes, p + f"transformer_blocks.{i}.attn2.")]
        out = require_shape(shapes, p + "proj_out.weight")
    patch = x[-1]
    head = qk[0] if qk else base["attention_head_dim"]
    cfg.update(in_channels=x[1], patch_size=patch, joint_attention_dim=ctx[1], caption_projection_dim=ctx[0],
               pooled_projection_dim=pooled[1], attention_head_dim=head, num_attention_heads=x[0] // head, num_layers=blocks,
               qk_norm="rms_norm" if qk else None, dual_attention_layers=dual, out_channels=out[0] // (patch * patch))
    if pos is not None:
        cfg["pos_embed_max_size"] = math.isqrt(pos[1])
    return cfg


def infer_t5(shapes: Shapes, base: dict, p: str = "") -> dict:
    """A T5 encoder's config from its tensors (transformers' layout)."""
    vocab, width = t5_embedding(shapes, p)
    heads = require_shape(shapes, p + "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")
    gated = p + "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in shapes
    inner = require_shape(shapes, p + "encoder.block.0.layer.1.DenseReluDense." + ("wi_0.weight" if gated else "wi.weight"))[0]
    cfg = copy.deepcopy(base)
    cfg.update(vocab_size=vocab, d_model=width, d_ff=inner, num_heads=heads[1], relative_attention_num_buckets=heads[0],
               d_kv=require_shape(shapes, p + "encoder.block.0.layer.0.SelfAttention.q.weight")[0] // heads[1],
               num_layers=count_children(shapes, p + "encoder.block."), feed_forward_proj="gated-gelu" if gated else "relu",
               is_gated_act=gated, dense_act_fn="gelu_new" if gated else "relu")
    return cfg


def t5_embedding(shapes: Shapes, p: str = "") -> tuple[int, ...]:
    """T5's token embedding shape (vocabulary, width): `shared.weight`, or the encoder's copy some files keep instead."""
    return shapes.get(p + "shared.weight") or require_shape(shapes, p + "encoder.embed_tokens.weight")


def family_configs(family: str, guidance: bool = True) -> dict[str, dict]:
    """The shipped configs; FLUX schnell (no guidance embedder) samples with its own scheduler settings."""
    configs = standard_configs(family)
    if family == "flux" and not guidance:
        configs["scheduler"].update(SCHNELL_SCHEDULER)
    return configs


# ---------------------------------------------------------------------------------------------
# Finding the parts


_SHAPES: dict[tuple[str, int, int], Shapes] = {}


def _shapes(path: Path, allow_pickle: bool = False) -> Shapes:
    """A file's tensor shapes, remembered while the file is unchanged (encoders are compared on every prepare)."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _SHAPES:
        if len(_SHAPES) > 256:
            _SHAPES.clear()
        _SHAPES[key] = read_tensor_shapes(path, allow_pickle)
    return _SHAPES[key]


def _clip_widths(shapes: Shapes, p: str = "") -> tuple[int, int | None]:
    """(hidden width, projection width or None) of a CLIP text encoder."""
    tp = p + "text_model." if has_prefix(shapes, p + "text_model.") else p
    width = require_shape(shapes, tp + "embeddings.token_embedding.weight")[1]
    projection = shapes.get(p + "text_projection.weight")
    return width, (projection[0] if projection else None)


def _named_first(infos: list[ModelInfo], words: tuple[str, ...]) -> list[ModelInfo]:
    """Models whose name carries one of `words` first (a tie-break only), else in the library's order."""
    return sorted(infos, key=lambda m: not any(w in m.name.lower() for w in words))


def find_parts(info: ModelInfo, library: Any) -> Parts:
    """The parts of a single-file SD3 or FLUX model: its own where it has them, else the library's that fit;
    ModelNotFound names a missing part and the folder it belongs in."""
    allow_pickle = library.settings.allow_pickle
    path = Path(info.path)
    shapes = _shapes(path, allow_pickle)
    found = flow_transformer(shapes)
    if found is None:
        raise UnsupportedModel(f"'{path.name}' holds no SD3 or FLUX transformer.")
    family, layout, prefix = found
    config = infer_transformer(shapes, family, layout, prefix, family_configs(family)["transformer"])
    label, folder = LABEL[family], library.home.model_dir("text-encoder")
    text: dict[str, Part] = {role: Part(path, FLOW_TEXT[role], info.name) for role in ROLES[family]
                             if text_encoder_family(shapes, FLOW_TEXT[role]) is not None}
    encoders = [m for m in library.list("text-encoder") if m.format != "ckpt" or allow_pickle]
    clips = [(m, *_clip_widths(_shapes(Path(m.path), allow_pickle))) for m in encoders if m.family == "clip"]
    if "t5xxl" not in text:
        fits = [m for m in encoders if m.family == "t5"
                and t5_embedding(_shapes(Path(m.path), allow_pickle))[1] == config["joint_attention_dim"]]
        if fits:
            text["t5xxl"] = Part(Path(_named_first(fits, ("t5xxl",))[0].path), name=_named_first(fits, ("t5xxl",))[0].name)
    if family == "flux" and "clip_l" not in text:
        fits = [m for m, width, _ in clips if width == config["pooled_projection_dim"]]
        if fits:
            text["clip_l"] = Part(Path(_named_first(fits, ("clip_l",))[0].path), name=_named_first(fits, ("clip_l",))[0].name)
    if family == "sd3" and not ("clip_l" in text and "clip_g" in text):
        pairs = [(l, g) for l, lw, lp in clips for g, gw, gp in clips
                 if l is not g and lp and gp and lw <= gw and lp + gp == config["pooled_projection_dim"]]
        pairs.sort(key=lambda pair: ("clip_l" not in pair[0].name.lower()) + ("clip_g" not in pair[1].name.lower()))
        if pairs:
            text.setdefault("clip_l", Part(Path(pairs[0][0].path), name=pairs[0][0].name))
            text.setdefault("clip_g", Part(Path(pairs[0][1].path), name=pairs[0][1].name))
    missing = [ROLE_NAMES[role] for role in ROLES[family] if role not in text]
    if missing:
        what = " and ".join(missing) + (" text encoders that fit" if len(missing) > 1 else " text encoder that fits")
        raise ModelNotFound(f"The {label} model '{info.name}' holds only the transformer and needs the {what} it in {folder} "
                            "(or a ComfyUI models/text_encoders folder), and there are none.", field="model")
    vae = _own_vae(path, shapes, info.name) or _library_vae(info, library, family)
    tokenizer = t5_tokenizer_folder(text["t5xxl"].path, library.home.model_dir("text-encoder"), label, info.name)
    return Parts(family, layout, Part(path, prefix, info.name), text, vae, tokenizer)


def _own_vae(path: Path, shapes: Shapes, name: str) -> Part | None:
    for prefix in ("first_stage_model.", "vae."):
        if prefix + "decoder.conv_in.weight" in shapes:
            return Part(path, prefix, name)
    return None


def _vae_channels(info: ModelInfo, allow_pickle: bool) -> int | None:
    path = Path(info.path)
    if path.is_dir():
        import json

        config = path / "config.json"
        return json.loads(config.read_text()).get("latent_channels") if config.is_file() else None
    shapes = _shapes(path, allow_pickle)
    prefix = vae_prefix(shapes)
    return None if prefix is None else shapes[prefix + "decoder.conv_in.weight"][1]


def _library_vae(info: ModelInfo, library: Any, family: str) -> Part:
    allow = library.settings.allow_pickle
    fits = [m for m in library.list("vae") if (m.format != "ckpt" or allow) and _vae_channels(m, allow) == 16]
    words = ("ae", "flux") if family == "flux" else ("sd3",)
    if not fits:
        raise ModelNotFound(
            f"The {LABEL[family]} model '{info.name}' holds only the transformer and needs its 16-channel VAE "
            f"({'ae.safetensors' if family == 'flux' else 'the SD3.5 VAE'}) in {library.home.model_dir('vae')} (or a ComfyUI "
            "models/vae folder), and there is none.", field="model")
    best = _named_first(fits, words)[0]
    return Part(Path(best.path), name=best.name)


def _has_tokenizer(folder: Path) -> bool:
    return (folder / TOKENIZER_DIR / "tokenizer.json").is_file()


def t5_tokenizer_folder(t5_file: Path, home_folder: Path, label: str, name: str) -> Path:
    """T5's tokenizer: a `t5_tokenizer` folder with its tokenizer.json beside the T5 file or in the home's
    text encoder folder; one sentence naming where it belongs otherwise."""
    for folder in (t5_file.parent, home_folder):
        if _has_tokenizer(folder):
            return folder / TOKENIZER_DIR
    raise ModelNotFound(
        f"The {label} model '{name}' needs T5's tokenizer: put its tokenizer.json in a folder named {TOKENIZER_DIR} in "
        f"{home_folder} (ComfyUI's comfy/text_encoders/t5_tokenizer, or the model's tokenizer folder from Hugging Face).",
        field="model")


# ---------------------------------------------------------------------------------------------
# Loading


def _strip(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items()}


def _into(model_class: Any, config: Any, state: dict[str, torch.Tensor], dtype: torch.dtype, what: str,
          from_config: bool = True, ignore: tuple[str, ...] = ()) -> Any:
    """A model built on the meta device (no weights allocated twice), then given the file's tensors."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        model = model_class.from_config(config) if from_config else model_class(config)
    own = set(model.state_dict())
    renamed = {}
    for key, value in state.items():
        for candidate in (key, "text_model." + key, key.removeprefix("text_model.")):
            if candidate in own:
                renamed[candidate] = value
                break
        else:
            if not key.endswith(("position_ids", "logit_scale")) and not key.startswith(ignore):
                raise UnsupportedModel(f"The {what} has a tensor '{key}' that the model it should be has no place for.")
    missing = own - set(renamed)
    if missing:
        raise UnsupportedModel(f"The {what} lacks {len(missing)} of its tensors (for example '{sorted(missing)[0]}').")
    model.load_state_dict(renamed, strict=True, assign=True)
    return torch.nn.Module.to(model, dtype).eval()  # nn.Module's own: diffusers' `to` warns about fp32-kept modules


def load_transformer(part: Part, family: str, layout: str, config: dict, dtype: torch.dtype, allow_pickle: bool = False) -> Any:
    import diffusers
    from diffusers.loaders import single_file_utils as sfu

    state = _strip(read_tensors(part.path, part.prefix, allow_pickle), part.prefix)
    if layout == "original":
        if family == "flux":
            state = sfu.convert_flux_transformer_checkpoint_to_diffusers(state)
        else:
            state = sfu.convert_sd3_transformer_checkpoint_to_diffusers(state)
    cls = getattr(diffusers, "FluxTransformer2DModel" if family == "flux" else "SD3Transformer2DModel")
    return _into(cls, config, state, dtype, f"{LABEL[family]} transformer in '{part.path.name}'")


def load_clip(part: Part, template: dict, projection: bool, dtype: torch.dtype, allow_pickle: bool = False) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    shapes = _shapes(part.path, allow_pickle)
    tp = part.prefix + "text_model." if has_prefix(shapes, part.prefix + "text_model.") else part.prefix
    config = infer_clip(shapes, template, tp)
    width, proj = _clip_widths(shapes, part.prefix)
    config["projection_dim"] = proj or width
    if projection and proj is None:
        raise UnsupportedModel(f"The CLIP text encoder '{part.path.name}' has no text projection, which SD3.5 needs.")
    cfg = CLIPTextConfig(**{k: v for k, v in config.items() if k not in ("architectures", "model_type")})
    state = _strip(read_tensors(part.path, part.prefix, allow_pickle), part.prefix)
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    return _into(cls, cfg, state, dtype, f"CLIP text encoder '{part.path.name}'", from_config=False,
                 ignore=() if projection else ("text_projection",))


def load_t5(part: Part, template: dict, dtype: torch.dtype, allow_pickle: bool = False) -> Any:
    from transformers import T5Config, T5EncoderModel

    config = infer_t5(_shapes(part.path, allow_pickle), template, part.prefix)
    cfg = T5Config(**{k: v for k, v in config.items() if k not in ("architectures", "model_type")})
    state = _strip(read_tensors(part.path, part.prefix, allow_pickle), part.prefix)
    for name, twin in (("encoder.embed_tokens.weight", "shared.weight"), ("shared.weight", "encoder.embed_tokens.weight")):
        if name not in state and twin in state:  # tied; files keep one of the two
            state[name] = state[twin]
    return _into(T5EncoderModel, cfg, state, dtype, f"T5 text encoder '{part.path.name}'", from_config=False)


def load_vae(part: Part, family: str, dtype: torch.dtype, allow_pickle: bool = False) -> Any:
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    if part.path.is_dir():
        return AutoencoderKL.from_pretrained(str(part.path), local_files_only=True, torch_dtype=dtype)
    from localdiffusion.models.architecture import infer_vae

    shapes = _shapes(part.path, allow_pickle)
    config = infer_vae(shapes, family_configs(family)["vae"], part.prefix)
    state = _strip(read_tensors(part.path, part.prefix, allow_pickle), part.prefix)
    if "encoder.down.0.block.0.conv1.weight" in state:  # the original (LDM) layout
        state = convert_ldm_vae_checkpoint(state, config)
    return _into(AutoencoderKL, config, state, dtype, f"VAE '{part.path.name}'")


def load_flow_file(parts: Parts, cache_dir: Path, dtype: torch.dtype, allow_pickle: bool = False) -> Any:
    """The diffusers pipeline (StableDiffusion3Pipeline or FluxPipeline) of a single-file model and its parts."""
    import diffusers
    from transformers import T5TokenizerFast

    family = parts.family
    shapes = _shapes(parts.transformer.path, allow_pickle)
    guidance = family != "flux" or any(k.startswith(parts.transformer.prefix) and ("guidance_in." in k or "guidance_embedder." in k)
                                       for k in shapes)
    configs = family_configs(family, guidance)
    config = infer_transformer(shapes, family, parts.layout, parts.transformer.prefix, configs["transformer"])
    names = COMPONENTS[family]
    components: dict[str, Any] = {
        "transformer": load_transformer(parts.transformer, family, parts.layout, config, dtype, allow_pickle),
        "vae": load_vae(parts.vae, family, dtype, allow_pickle),
        "scheduler": diffusers.FlowMatchEulerDiscreteScheduler.from_config(configs["scheduler"]),
        names["t5xxl"]: load_t5(parts.text["t5xxl"], configs[names["t5xxl"]], dtype, allow_pickle),
        names["clip_l"]: load_clip(parts.text["clip_l"], configs["text_encoder"], family == "sd3", dtype, allow_pickle),
        "tokenizer": load_tokenizer(cache_dir, PAD_SD1),
    }
    t5_tokenizer = T5TokenizerFast.from_pretrained(str(parts.t5_tokenizer), local_files_only=True)
    if family == "sd3":
        components["text_encoder_2"] = load_clip(parts.text["clip_g"], configs["text_encoder_2"], True, dtype, allow_pickle)
        components["tokenizer_2"] = load_tokenizer(cache_dir, PAD_OPENCLIP)
        components["tokenizer_3"] = t5_tokenizer
        return diffusers.StableDiffusion3Pipeline(**components)
    components["tokenizer_2"] = t5_tokenizer
    return diffusers.FluxPipeline(**components)


def module_names(parts: Parts) -> dict[str, str]:
    """Forge's infotext names the separate VAE and text encoders: `Module 1: ae, Module 2: clip_l, ...`."""
    own = parts.transformer.path
    modules = [p.name for p in (parts.vae, *(parts.text[r] for r in ROLES[parts.family])) if p.path != own]
    return {f"Module {i}": name for i, name in enumerate(modules, 1)}


def guidance_distilled(info: ModelInfo, allow_pickle: bool = False) -> bool:
    """Whether a FLUX model takes its guidance as an input (dev; schnell does not), read without loading it."""
    if info.family != "flux":
        return False
    path = Path(info.path)
    if path.is_dir():
        import json

        return bool(json.loads((path / "transformer" / "config.json").read_text()).get("guidance_embeds"))
    return any("guidance_in." in k or "guidance_embedder." in k for k in _shapes(path, allow_pickle))
