"""Tiny random-weight Stable Diffusion models, built locally for the tests.

Each builder writes a diffusers folder. The shapes keep to the rules that the single-file
loader relies on for what tensors cannot show (SD1: 8 UNet heads; SD2/SDXL: UNet head width 64;
CLIP heads = width / 64; GroupNorm with 32 groups), so that a single-file twin of each folder
loads back to the same architecture.

`torch.manual_seed(0)` before building gives identical weights every time.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from localdiffusion.models.tokenizer import PAD_OPENCLIP, PAD_SD1, load_tokenizer

TEXT_WIDTH = 64  # one CLIP head of width 64
SDXL_SCALING = 0.13025  # SDXL's VAE scaling factor, as its single files load

SD_SCHEDULER = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
    steps_offset=1, timestep_spacing="leading", clip_sample=False, set_alpha_to_one=False,
)


def _vae(scaling_factor: float = 0.18215) -> AutoencoderKL:
    return AutoencoderKL(
        scaling_factor=scaling_factor,
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 32, 32, 32), layers_per_block=1, norm_num_groups=32, sample_size=128,
    )


def _text_config(act: str, projection: int | None = None, layers: int = 3) -> CLIPTextConfig:
    return CLIPTextConfig(
        hidden_size=TEXT_WIDTH, intermediate_size=4 * TEXT_WIDTH, num_attention_heads=TEXT_WIDTH // 64,
        num_hidden_layers=layers, vocab_size=49408, max_position_embeddings=77, hidden_act=act,
        projection_dim=projection or TEXT_WIDTH, bos_token_id=49406, eos_token_id=49407,
        pad_token_id=49407 if act == "quick_gelu" else 0,
    )


def _scheduler(prediction_type: str = "epsilon") -> EulerDiscreteScheduler:
    return EulerDiscreteScheduler(prediction_type=prediction_type, **{k: v for k, v in SD_SCHEDULER.items() if k not in ("clip_sample", "set_alpha_to_one")})


def _save(pipe, folder: Path) -> Path:
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


def build_sd1(folder: Path, cache_dir: Path, inpaint: bool = False) -> Path:
    """A tiny SD 1.x (or SD 1.x inpainting) model as a diffusers folder."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=9 if inpaint else 4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=8, norm_num_groups=32,
    )
    cls = StableDiffusionInpaintPipeline if inpaint else StableDiffusionPipeline
    pipe = cls(
        unet=unet, vae=_vae(), text_encoder=CLIPTextModel(_text_config("quick_gelu")),
        tokenizer=load_tokenizer(cache_dir, PAD_SD1), scheduler=_scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    return _save(pipe, folder)


def build_sd2(folder: Path, cache_dir: Path, v_prediction: bool = True) -> Path:
    """A tiny SD 2.x model (v-prediction by default) as a diffusers folder."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(64, 128), layers_per_block=1, cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=(1, 2), use_linear_projection=True, norm_num_groups=32,
    )
    pipe = StableDiffusionPipeline(
        unet=unet, vae=_vae(), text_encoder=CLIPTextModel(_text_config("gelu")),
        tokenizer=load_tokenizer(cache_dir, PAD_OPENCLIP),
        scheduler=_scheduler("v_prediction" if v_prediction else "epsilon"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    return _save(pipe, folder)


def build_sdxl(folder: Path, cache_dir: Path, refiner: bool = False) -> Path:
    """A tiny SDXL base (or refiner) model as a diffusers folder."""
    torch.manual_seed(0)
    time_dim = 8
    text_2 = CLIPTextModelWithProjection(_text_config("gelu", projection=TEXT_WIDTH))
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(64, 128), layers_per_block=1, transformer_layers_per_block=(1, 2),
        attention_head_dim=(1, 2), use_linear_projection=True, norm_num_groups=32,
        cross_attention_dim=TEXT_WIDTH if refiner else 2 * TEXT_WIDTH,
        addition_embed_type="text_time", addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=(5 if refiner else 6) * time_dim + TEXT_WIDTH,
    )
    scheduler = _scheduler()
    tok_2 = load_tokenizer(cache_dir, PAD_OPENCLIP)
    if refiner:
        pipe = StableDiffusionXLImg2ImgPipeline(
            unet=unet, vae=_vae(SDXL_SCALING), text_encoder=None, tokenizer=None, text_encoder_2=text_2, tokenizer_2=tok_2,
            scheduler=scheduler, requires_aesthetics_score=True, force_zeros_for_empty_prompt=False,
        )
    else:
        pipe = StableDiffusionXLPipeline(
            unet=unet, vae=_vae(SDXL_SCALING), text_encoder=CLIPTextModel(_text_config("quick_gelu")),
            tokenizer=load_tokenizer(cache_dir, PAD_SD1), text_encoder_2=text_2, tokenizer_2=tok_2, scheduler=scheduler,
        )
    return _save(pipe, folder)


def folder_config(folder: Path, component: str) -> dict:
    name = "scheduler_config.json" if component == "scheduler" else "config.json"
    return json.loads((Path(folder) / component / name).read_text())


# ---------------------------------------------------------------------------------------------
# Single files and add-ons (A1111 layouts), built from the folders above


def load_folder(folder: Path):
    """The pipeline saved in a diffusers folder, loaded offline."""
    from diffusers import DiffusionPipeline

    return DiffusionPipeline.from_pretrained(str(folder), local_files_only=True)


def build_single_file(folder: Path, path: Path) -> Path:
    """The A1111-style single-file twin of a diffusers folder (`.safetensors`, or `.ckpt` as a pickle).

    A v-prediction folder (the default SD2) gets the `v_pred` marker key.
    """
    from localdiffusion.models.single_file import save_single_file

    return save_single_file(load_folder(folder), path)


def build_inpaint_variant(folder: Path, out: Path) -> Path:
    """The inpainting twin of an SD1/SD2/SDXL base folder: the same parts with a 9-channel UNet."""
    from diffusers import StableDiffusionXLInpaintPipeline

    pipe = load_folder(folder)
    torch.manual_seed(1)
    unet = UNet2DConditionModel.from_config({**pipe.unet.config, "in_channels": 9})
    components = {k: v for k, v in pipe.components.items() if k != "unet"}
    if "text_encoder_2" in components:
        inpaint = StableDiffusionXLInpaintPipeline(unet=unet, **components)
    else:
        inpaint = StableDiffusionInpaintPipeline(unet=unet, **components)
    return _save(inpaint, out)


def _linear_modules(model, suffixes: tuple[str, ...]) -> list[tuple[str, torch.nn.Linear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.endswith(suffixes)]


def build_lora(folder: Path, path: Path, rank: int = 4) -> Path:
    """A kohya-format LoRA for a tiny SD1 folder: every attention projection of the UNet and text encoder,
    as kohya's trainer writes them (diffusers recognises the format by, among others, the output projections)."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_pretrained(str(folder), subfolder="unet", local_files_only=True)
    text = CLIPTextModel.from_pretrained(str(folder), subfolder="text_encoder", local_files_only=True)
    unet_parts = tuple(f"{a}.{p}" for a in ("attn1", "attn2") for p in ("to_q", "to_k", "to_v", "to_out.0"))
    targets = [("lora_unet_", n, m) for n, m in _linear_modules(unet, unet_parts)]
    # kohya names text-encoder modules with the `text_model.` prefix that transformers 5.x dropped
    text_parts = tuple(f"self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "out_proj"))
    targets += [("lora_te_text_model_", n, m) for n, m in _linear_modules(text, text_parts)]
    state = {}
    for prefix, name, module in targets:
        key = prefix + name.replace(".", "_")
        state[f"{key}.lora_down.weight"] = torch.randn(rank, module.in_features) * 0.1
        state[f"{key}.lora_up.weight"] = torch.randn(module.out_features, rank) * 0.1
        state[f"{key}.alpha"] = torch.tensor(float(rank))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


def build_embedding(path: Path, vectors: int = 2, width: int = TEXT_WIDTH) -> Path:
    """An A1111 textual-inversion embedding: `emb_params` in .safetensors, `string_to_param` in .pt."""
    torch.manual_seed(0)
    params = torch.randn(vectors, width) * 0.01
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({"emb_params": params}, str(path))
    else:
        torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": params}, "name": path.stem,
                    "step": 0, "sd_checkpoint": None, "sd_checkpoint_name": None}, path)
    return path


def build_vae_file(folder: Path, path: Path) -> Path:
    """A standalone VAE file in the LDM layout (keys `encoder.down.0.block...`), as in `models/VAE`."""
    from safetensors.torch import save_file

    from localdiffusion.models.single_file import vae_to_ldm

    vae = AutoencoderKL.from_pretrained(str(folder), subfolder="vae", local_files_only=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in vae_to_ldm(vae).items()}, str(path))
    return path


def build_controlnet(folder: Path, out: Path) -> Path:
    """A tiny ControlNet made from a folder's UNet, saved as a diffusers folder."""
    from diffusers import ControlNetModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_pretrained(str(folder), subfolder="unet", local_files_only=True)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 32, 32))
    controlnet.save_pretrained(str(out), safe_serialization=True)
    return out


def _once(target: Path, build) -> Path:
    return target if target.exists() else build(target)


def build_zoo(root: Path) -> dict[str, Path]:
    """Every tiny model kind and family, in both layouts, built once per root (tests share it).

    Folders are named by family; the single files get neutral names so that no test can pass
    by reading a file name.
    """
    root = Path(root)
    cache = root / "cache"
    zoo = {
        "sd1": _once(root / "sd1", lambda p: build_sd1(p, cache)),
        "sd2-v": _once(root / "sd2-v", lambda p: build_sd2(p, cache)),
        "sd2": _once(root / "sd2", lambda p: build_sd2(p, cache, v_prediction=False)),
        "sdxl": _once(root / "sdxl", lambda p: build_sdxl(p, cache)),
        "sdxl-refiner": _once(root / "sdxl-refiner", lambda p: build_sdxl(p, cache, refiner=True)),
        "sd1-inpaint": _once(root / "sd1-inpaint", lambda p: build_sd1(p, cache, inpaint=True)),
    }
    zoo["sd2-inpaint"] = _once(root / "sd2-inpaint", lambda p: build_inpaint_variant(zoo["sd2"], p))
    zoo["sdxl-inpaint"] = _once(root / "sdxl-inpaint", lambda p: build_inpaint_variant(zoo["sdxl"], p))
    for i, family in enumerate(list(zoo)):
        zoo[f"{family}.file"] = _once(root / "files" / f"model_{i}.safetensors", lambda p, f=family: build_single_file(zoo[f], p))
    zoo["lora"] = _once(root / "files" / "lora.safetensors", lambda p: build_lora(zoo["sd1"], p))
    zoo["embedding"] = _once(root / "files" / "embedding.safetensors", build_embedding)
    zoo["embedding.pt"] = _once(root / "files" / "embedding.pt", build_embedding)
    zoo["vae"] = _once(root / "files" / "vae.safetensors", lambda p: build_vae_file(zoo["sd1"], p))
    zoo["controlnet"] = _once(root / "controlnet", lambda p: build_controlnet(zoo["sd1"], p))
    zoo["cache"] = cache
    return zoo


def build_live_controlnet(folder: Path, out: Path, seed: int = 0) -> Path:
    """A tiny ControlNet whose zero convolutions are random, so that it visibly steers the image.

    `ControlNetModel.from_unet` starts every output convolution at zero (as training does), which
    would make any control a no-op; a test that checks the effect needs non-zero residuals.
    """
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(str(folder), subfolder="unet", local_files_only=True)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 32, 32))
    zeroed = [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block, controlnet.controlnet_cond_embedding.conv_out]
    with torch.no_grad():
        for conv in zeroed:
            conv.weight.normal_(0.0, 0.2)
            conv.bias.normal_(0.0, 0.05)
    controlnet.save_pretrained(str(out), safe_serialization=True)
    return out


def build_controlnet_file(controlnet_folder: Path, path: Path) -> Path:
    """The A1111-style single-file twin (`control_model.*` keys) of a diffusers ControlNet folder."""
    from diffusers import ControlNetModel

    from localdiffusion.models.single_file import save_controlnet_file

    controlnet = ControlNetModel.from_pretrained(str(controlnet_folder), local_files_only=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_controlnet_file(controlnet, path)


# ---------------------------------------------------------------------------------------------
# IP-Adapters (h94's single-file layout) and their CLIP image encoder


def build_image_encoder(out: Path, projection: int = 32, hidden: int = 32) -> Path:
    """A tiny CLIPVisionModelWithProjection folder, as h94/IP-Adapter's `image_encoder/` (32-pixel input)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2, num_attention_heads=hidden // 16,
                              image_size=32, patch_size=8, projection_dim=projection)
    CLIPVisionModelWithProjection(config).save_pretrained(str(out))
    return out


def cross_attention_layers(folder: Path) -> tuple[list[int], int]:
    """The width of each cross-attention layer of a folder's UNet, in diffusers' processor order, and the
    UNet's cross-attention width: what an IP-Adapter for it must match."""
    unet = UNet2DConditionModel.from_pretrained(str(folder), subfolder="unet", local_files_only=True)
    widths = [unet.get_submodule(name.removesuffix(".processor")).to_k.out_features
              for name in unet.attn_processors if name.endswith("attn2.processor")]
    return widths, unet.config.cross_attention_dim


def build_ip_adapter(path: Path, layer_widths: list[int], cross_width: int, encoder_width: int = 32, seed: int = 0) -> Path:
    """A plain IP-Adapter file: `image_proj` (4 image tokens from the image embedding) and `to_k_ip`/`to_v_ip`
    for each cross-attention layer, numbered 1, 3, 5, ... as h94's files are. The weights are random and
    clearly non-zero, so that a reference visibly steers the image. `.bin` is a pickle of the nested dict,
    as h94's `.bin` files are."""
    torch.manual_seed(seed)
    image_proj = {
        "proj.weight": torch.randn(4 * cross_width, encoder_width) * 0.5, "proj.bias": torch.zeros(4 * cross_width),
        "norm.weight": torch.ones(cross_width), "norm.bias": torch.zeros(cross_width),
    }
    ip_adapter = {}
    for i, width in enumerate(layer_widths):
        ip_adapter[f"{2 * i + 1}.to_k_ip.weight"] = torch.randn(width, cross_width) * 0.5
        ip_adapter[f"{2 * i + 1}.to_v_ip.weight"] = torch.randn(width, cross_width) * 0.5
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".bin":
        torch.save({"image_proj": image_proj, "ip_adapter": ip_adapter}, path)
    else:
        from safetensors.torch import save_file

        flat = {f"image_proj.{k}": v for k, v in image_proj.items()} | {f"ip_adapter.{k}": v for k, v in ip_adapter.items()}
        save_file(flat, str(path))
    return path


def build_ip_adapter_for(folder: Path, path: Path, encoder_width: int = 32, seed: int = 0) -> Path:
    """A live IP-Adapter that fits a tiny model folder's UNet."""
    widths, cross = cross_attention_layers(folder)
    return build_ip_adapter(path, widths, cross, encoder_width, seed)


# ---------------------------------------------------------------------------------------------
# SD3/3.5 and FLUX (flow matching): tiny transformers, CLIP-L/-G, T5 and a 16-channel VAE. CLIP-L is narrower
# than CLIP-G (as in the real models), so the library picks encoders by width without file names.

T5_WORDS = ["a", "photo", "of", "cat", "dog", "red", "blue", "house", "in", "the", "snow", "portrait", "with", "hat"]


def build_t5_tokenizer(folder: Path):
    """A tiny T5 tokenizer (a Unigram model with `tokenizer.json`), built locally with the `tokenizers` library."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [("▁" + w, -1.0) for w in T5_WORDS] + [(c, -3.0) for c in "abcdefghijklmnopqrstuvwxyz,."]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>", extra_ids=0)
    tokenizer.save_pretrained(str(folder))
    return T5TokenizerFast.from_pretrained(str(folder))


def _t5(width: int):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(d_model=width, d_ff=2 * width, d_kv=width // 4, num_heads=4, num_layers=2, vocab_size=64,
                                   feed_forward_proj="gated-gelu", relative_attention_num_buckets=8, is_encoder_decoder=False,
                                   use_cache=False))


def _flow_vae(scaling: float, shift: float) -> AutoencoderKL:
    return AutoencoderKL(
        scaling_factor=scaling, shift_factor=shift, use_quant_conv=False, use_post_quant_conv=False,
        in_channels=3, out_channels=3, latent_channels=16,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 32, 32, 32), layers_per_block=1, norm_num_groups=32, sample_size=128,
    )


def build_sd3(folder: Path, cache_dir: Path) -> Path:
    """A tiny SD3.5-like model (qk norm) as a diffusers folder: CLIP-L 64 wide, CLIP-G 128, T5 192."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=32, patch_size=2, in_channels=16, out_channels=16, num_layers=2, attention_head_dim=32,
        num_attention_heads=2, joint_attention_dim=192, caption_projection_dim=64, pooled_projection_dim=192,
        pos_embed_max_size=32, qk_norm="rms_norm",
    )
    clip_l = CLIPTextModelWithProjection(_text_config("quick_gelu", projection=TEXT_WIDTH))
    g = _text_config("gelu", projection=2 * TEXT_WIDTH)
    g.hidden_size, g.num_attention_heads, g.intermediate_size = 2 * TEXT_WIDTH, 2, 8 * TEXT_WIDTH
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=_flow_vae(1.5305, 0.0609),
        text_encoder=clip_l, tokenizer=load_tokenizer(cache_dir, PAD_SD1),
        text_encoder_2=CLIPTextModelWithProjection(g), tokenizer_2=load_tokenizer(cache_dir, PAD_OPENCLIP),
        text_encoder_3=_t5(192), tokenizer_3=build_t5_tokenizer(Path(cache_dir) / "t5-tokenizer-sd3"),
    )
    return _save(pipe, folder)


def build_flux(folder: Path, cache_dir: Path, guidance: bool = True) -> Path:
    """A tiny FLUX.1 dev (or schnell: no guidance embedder) as a diffusers folder: CLIP-L 64 wide, T5 64."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=32, num_attention_heads=2,
        joint_attention_dim=64, pooled_projection_dim=TEXT_WIDTH, guidance_embeds=guidance, axes_dims_rope=(4, 14, 14),
    )
    scheduler = (FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                 base_image_seq_len=256, max_image_seq_len=4096) if guidance
                 else FlowMatchEulerDiscreteScheduler(shift=1.0))
    pipe = FluxPipeline(
        transformer=transformer, scheduler=scheduler, vae=_flow_vae(0.3611, 0.1159),
        text_encoder=CLIPTextModel(_text_config("quick_gelu")), tokenizer=load_tokenizer(cache_dir, PAD_SD1),
        text_encoder_2=_t5(64), tokenizer_2=build_t5_tokenizer(Path(cache_dir) / "t5-tokenizer-flux"),
    )
    return _save(pipe, folder)


def build_comfy_layout(folder: Path, models: Path, name: str) -> dict[str, Path]:
    """A flow model's diffusers folder as a ComfyUI user keeps it: `models/diffusion_models/<name>.safetensors` (the
    transformer alone), `models/text_encoders/<name>_clip_l|clip_g|t5xxl.safetensors` with the T5 tokenizer in
    `text_encoders/t5_tokenizer/`, and `models/vae/<name>_ae.safetensors` (original LDM layout)."""
    import shutil

    from safetensors.torch import save_file

    from localdiffusion.models.single_file import vae_to_ldm

    pipe = load_folder(folder)
    out = {"diffusion_models": models / "diffusion_models" / f"{name}.safetensors"}
    for sub in ("diffusion_models", "text_encoders", "vae"):
        (models / sub).mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in pipe.transformer.state_dict().items()}, str(out["diffusion_models"]))
    roles = {"clip_l": "text_encoder", "clip_g": "text_encoder_2", "t5xxl": "text_encoder_3"} if hasattr(pipe, "text_encoder_3") \
        else {"clip_l": "text_encoder", "t5xxl": "text_encoder_2"}
    for role, component in roles.items():
        model = getattr(pipe, component)
        state = {k: v.contiguous() for k, v in model.state_dict().items() if "position_ids" not in k}
        if role != "t5xxl":  # ComfyUI's CLIP files carry transformers' `text_model.` prefix
            state = {(k if k.startswith(("text_model.", "text_projection")) else "text_model." + k): v for k, v in state.items()}
        else:
            state.pop("encoder.embed_tokens.weight", None)  # tied to shared.weight; ComfyUI's files keep one
        out[role] = models / "text_encoders" / f"{name}_{role}.safetensors"
        save_file(state, str(out[role]))
    tokenizer = "tokenizer_3" if "clip_g" in roles else "tokenizer_2"
    shutil.copytree(folder / tokenizer, models / "text_encoders" / "t5_tokenizer", dirs_exist_ok=True)
    out["vae"] = models / "vae" / f"{name}_ae.safetensors"
    save_file({k: v.contiguous() for k, v in vae_to_ldm(pipe.vae).items()}, str(out["vae"]))
    return out


def build_flow_lora(folder: Path, path: Path, rank: int = 4, seed: int = 1) -> Path:
    """A diffusers/peft LoRA (`transformer.*` keys) for a tiny SD3 or FLUX folder, with random (non-zero) weights."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = load_folder(folder)
    torch.manual_seed(seed)
    pipe.transformer.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                                            target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    type(pipe).save_lora_weights(str(path.parent), transformer_lora_layers=get_peft_model_state_dict(pipe.transformer),
                                 weight_name=path.name)
    return path


def build_kohya_flux_lora(folder: Path, path: Path, rank: int = 4, seed: int = 2) -> Path:
    """A kohya-style FLUX LoRA (`lora_unet_double_blocks_N_img_attn_qkv`, the original fused q/k/v) for a tiny folder."""
    from safetensors.torch import save_file

    inner = folder_config(folder, "transformer")["num_attention_heads"] * folder_config(folder, "transformer")["attention_head_dim"]
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for block in ("img_attn", "txt_attn"):
        name = f"lora_unet_double_blocks_0_{block}_qkv"
        state[f"{name}.lora_down.weight"] = torch.randn(rank, inner, generator=generator) * 0.1
        state[f"{name}.lora_up.weight"] = torch.randn(3 * inner, rank, generator=generator) * 0.1
        state[f"{name}.alpha"] = torch.tensor(float(rank))
    save_file(state, str(path))
    return path


def build_all_in_one(folder: Path, path: Path) -> Path:
    """An all-in-one single file of a tiny SD3 or FLUX folder, as ComfyUI saves checkpoints: the transformer under
    `model.diffusion_model.`, the text encoders under `text_encoders.<clip_l|clip_g|t5xxl>.transformer.`, the VAE
    (LDM layout) under `vae.`. T5's tokenizer still comes from a `t5_tokenizer` folder."""
    from safetensors.torch import save_file

    from localdiffusion.models.single_file import vae_to_ldm

    pipe = load_folder(folder)
    state = {"model.diffusion_model." + k: v for k, v in pipe.transformer.state_dict().items()}
    roles = {"clip_l": "text_encoder", "clip_g": "text_encoder_2", "t5xxl": "text_encoder_3"} if hasattr(pipe, "text_encoder_3") \
        else {"clip_l": "text_encoder", "t5xxl": "text_encoder_2"}
    for role, component in roles.items():
        for k, v in getattr(pipe, component).state_dict().items():
            if "position_ids" in k or k == "encoder.embed_tokens.weight":
                continue
            if role != "t5xxl" and not k.startswith(("text_model.", "text_projection")):
                k = "text_model." + k
            state[f"text_encoders.{role}.transformer.{k}"] = v
    state.update({"vae." + k: v for k, v in vae_to_ldm(pipe.vae).items()})
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path
