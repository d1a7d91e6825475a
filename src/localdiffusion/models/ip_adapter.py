"""IP-Adapters: what a file holds, whether it fits a checkpoint, where its image encoder is, loading.

An IP-Adapter (h94/IP-Adapter, as A1111's ControlNet extension and ComfyUI use them) is one file:
`image_proj.*` turns a CLIP image encoding into a few extra tokens, and `ip_adapter.N.to_k_ip` /
`to_v_ip` give the UNet's N-th attention processor keys and values for those tokens (N is odd:
only cross-attention layers have them). Its CLIP image encoder, a transformers
`CLIPVisionModelWithProjection` folder, sits beside it as `image_encoder/`:

    models/IP-Adapter/ip-adapter_sd15.safetensors
    models/IP-Adapter/image_encoder/config.json, model.safetensors      (ViT-H)

h94's own layout (`models/` and `sdxl_models/`, each with its `image_encoder/`) works as it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from localdiffusion.errors import BadInput, UnsupportedModel, one_of
from localdiffusion.models.controlnet import family_name, fits
from localdiffusion.models.detect import is_ip_adapter, is_pickle, read_tensor_shapes, read_tensors
from localdiffusion.models.info import ModelInfo, base_family
from localdiffusion.models.keys import UNET, Shapes, first_shape
from localdiffusion.models.library import IMAGE_ENCODER_DIR
from localdiffusion.store.home import MODEL_DIRS

# The encoders h94's adapters were trained with, by (width the adapter reads, whether it reads hidden states).
ENCODERS = {
    (1024, False): "ViT-H, as in models/image_encoder of h94/IP-Adapter",
    (1280, True): "ViT-H, as in models/image_encoder of h94/IP-Adapter",
    (1280, False): "ViT-bigG, as in sdxl_models/image_encoder of h94/IP-Adapter",
    (1664, True): "ViT-bigG, as in sdxl_models/image_encoder of h94/IP-Adapter",
}


@dataclass(frozen=True)
class AdapterShape:
    """What an IP-Adapter file needs around it, read from its tensor shapes."""

    cross_width: int  # the UNet's cross-attention width its image tokens are made for
    encoder_width: int  # the width of the image encoding it projects
    hidden_states: bool  # "plus" and "full face" adapters read the encoder's penultimate hidden states, plain ones its image embeddings


def adapter_shape(adapter: ModelInfo, allow_pickle: bool = False) -> AdapterShape:
    return shape_of(read_tensor_shapes(Path(adapter.path), allow_pickle), adapter.name)


def shape_of(shapes: Shapes, name: str) -> AdapterShape:
    """The adapter's needs, from the image projection diffusers will build (see its
    `_convert_ip_adapter_image_proj_to_diffusers`): plain, full face, FaceID or plus."""
    to_k = first_shape(shapes, "ip_adapter.", "to_k_ip.weight")
    if not is_ip_adapter(shapes) or to_k is None:
        raise UnsupportedModel(f"'{name}' is not an IP-Adapter: it has no image_proj and ip_adapter weights.")

    def proj(key: str) -> tuple[int, ...] | None:
        return shapes.get("image_proj." + key)

    if proj("proj.weight"):
        return AdapterShape(to_k[-1], proj("proj.weight")[-1], hidden_states=False)
    if proj("proj.3.weight"):
        return AdapterShape(to_k[-1], proj("proj.0.weight")[-1], hidden_states=True)
    if proj("perceiver_resampler.proj_in.weight") or proj("norm.weight"):
        raise UnsupportedModel(f"'{name}' is a FaceID IP-Adapter, which needs face embeddings from insightface that "
                               "Local Diffusion does not compute; use a plain or plus IP-Adapter.")
    if proj("proj_in.weight"):
        return AdapterShape(to_k[-1], proj("proj_in.weight")[-1], hidden_states=True)
    raise UnsupportedModel(f"'{name}' has an IP-Adapter image projection of a kind diffusers does not know.")


def unet_cross_width(checkpoint: ModelInfo) -> int | None:
    """The checkpoint UNet's cross-attention width, from its config or its file's header; None for a
    pickle, which would have to be loaded to tell (its adapters are then checked by family only)."""
    path = Path(checkpoint.path)
    if path.is_dir():
        config = path / "unet" / "config.json"
        width = json.loads(config.read_text("utf-8")).get("cross_attention_dim") if config.is_file() else None
        return width if isinstance(width, int) else None
    if is_pickle(path):
        return None
    to_k = first_shape(read_tensor_shapes(path), UNET, "attn2.to_k.weight")
    return to_k[-1] if to_k else None


def check_base(checkpoint: ModelInfo) -> None:
    if base_family(checkpoint.family) == "sdxl-refiner":
        raise BadInput(f"The model '{checkpoint.name}' is an SDXL refiner, which IP-Adapters cannot steer; choose an SDXL base model.", field="model")


def check_fits(adapter: ModelInfo, checkpoint: ModelInfo, field: str, allow_pickle: bool = False) -> AdapterShape:
    """The adapter's shape, refused in one sentence when it was made for another kind of model."""
    check_base(checkpoint)
    wanted = family_name(checkpoint.family)
    article = "an" if wanted[:1] in "Saeiou" else "a"
    if not fits(adapter.family, checkpoint.family):
        raise BadInput(f"The IP-Adapter '{adapter.name}' is for {family_name(adapter.family)} but the model '{checkpoint.name}' is "
                       f"{wanted}; choose {article} {wanted} IP-Adapter.", field=field)
    try:
        shape = adapter_shape(adapter, allow_pickle)
    except UnsupportedModel as e:
        raise UnsupportedModel(e.message, field=field) from None
    width = unet_cross_width(checkpoint)
    if width is not None and shape.cross_width != width:
        raise BadInput(f"The IP-Adapter '{adapter.name}' was made for a cross-attention width of {shape.cross_width} but the model "
                       f"'{checkpoint.name}' has {width}; choose {article} {wanted} IP-Adapter.", field=field)
    return shape


def find_adapter(index: int, name: str, checkpoint: ModelInfo, library: Any) -> tuple[ModelInfo, AdapterShape]:
    """A reference's IP-Adapter: the one it names, or else the installed one that fits the checkpoint
    (one made for its family before one whose family is unknown, then by name)."""
    field = f"references.{index}.model"
    allow_pickle = library.settings.allow_pickle
    check_base(checkpoint)
    if name:
        adapter = library.get(name, kind="ipadapter", field=field)  # the library's one lookup
        return adapter, check_fits(adapter, checkpoint, field, allow_pickle)
    installed = library.list("ipadapter")
    for adapter in sorted(installed, key=lambda m: (m.family == "unknown", m.name.lower())):
        try:
            return adapter, check_fits(adapter, checkpoint, field, allow_pickle)
        except (BadInput, UnsupportedModel):
            continue
    listed = one_of([f"{m.name} ({family_name(m.family)})" for m in installed]) if installed else "none"
    raise BadInput(
        f"Reference {index} needs an IP-Adapter for {family_name(checkpoint.family)} and none that fits is installed "
        f"(installed: {listed}); add one to {library.home.model_dir('ipadapter')} (for example ip-adapter_sd15.safetensors "
        f"for SD 1.x) or name one as the reference's model.", field=field,
    )


def image_encoder_folder(adapter: ModelInfo, shape: AdapterShape, home_root: Path, field: str) -> Path:
    """The CLIP image encoder folder for this adapter: `image_encoder/` beside it, else the home's
    `models/IP-Adapter/image_encoder/`; refused in one sentence that names the folder to add."""
    beside = Path(adapter.path).parent / IMAGE_ENCODER_DIR
    candidates = list(dict.fromkeys([beside, Path(home_root) / MODEL_DIRS["ipadapter"] / IMAGE_ENCODER_DIR]))
    present = [folder for folder in candidates if (folder / "config.json").is_file()]
    for folder in present:
        if encoder_width(folder, shape.hidden_states) == shape.encoder_width:
            return folder
    which = ENCODERS.get((shape.encoder_width, shape.hidden_states), f"a CLIP vision model whose output is {shape.encoder_width} wide")
    if not present:
        raise BadInput(f"The IP-Adapter '{adapter.name}' needs its CLIP image encoder, which is missing: add the folder {beside} "
                       f"(config.json and model.safetensors of {which}).", field=field)
    got = encoder_width(present[0], shape.hidden_states)
    free = next((folder for folder in candidates if folder not in present), beside)  # where the right one can go
    raise BadInput(f"The IP-Adapter '{adapter.name}' needs an image encoder whose output is {shape.encoder_width} wide ({which}), "
                   f"but {present[0]} gives {got}; put the matching encoder in {free}.", field=field)


def encoder_width(folder: Path, hidden_states: bool) -> int | None:
    """The width an encoder folder gives: its hidden size, or its projected image embeddings' size."""
    try:
        config = json.loads((folder / "config.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    vision = config.get("vision_config") or config
    width = vision.get("hidden_size") if hidden_states else config.get("projection_dim", vision.get("projection_dim"))
    return width if isinstance(width, int) else None


def a1111_module(checkpoint_family: str, shape: AdapterShape) -> str:
    """The ControlNet extension's preprocessor for an adapter's image encoding on a checkpoint of this family:
    the `Module` of its infotext unit."""
    if (shape.encoder_width, shape.hidden_states) in ((1280, False), (1664, True)):
        return "ip-adapter_clip_sdxl"  # ViT-bigG
    return "ip-adapter_clip_sdxl_plus_vith" if base_family(checkpoint_family) == "sdxl" else "ip-adapter_clip_sd15"


def read_adapter(adapter: ModelInfo, allow_pickle: bool = False) -> dict[str, dict[str, torch.Tensor]]:
    """The adapter's weights as diffusers' loader takes them: {"image_proj": {...}, "ip_adapter": {...}}."""
    tensors = read_tensors(Path(adapter.path), allow_pickle=allow_pickle)
    return {part: {key[len(part) + 1:]: value for key, value in tensors.items() if key.startswith(part + ".")}
            for part in ("image_proj", "ip_adapter")}


@dataclass
class ImageEncoder:
    """A loaded CLIP image encoder with its preprocessing, as the pipeline cache holds it."""

    model: Any  # transformers CLIPVisionModelWithProjection
    processor: Any  # transformers CLIPImageProcessor

    @property
    def components(self) -> dict[str, Any]:
        return {"image_encoder": self.model}


def load_image_encoder(folder: Path, dtype: torch.dtype, allow_pickle: bool = False) -> ImageEncoder:
    """The encoder on the CPU in `dtype`, offline. Its preprocessing is what diffusers' `load_ip_adapter`
    makes: CLIP's resize, centre crop and normalisation at the encoder's own image size."""
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    try:
        model = CLIPVisionModelWithProjection.from_pretrained(
            str(folder), dtype=dtype, local_files_only=True, use_safetensors=None if allow_pickle else True,
        ).eval()
    except (OSError, ValueError) as e:
        raise UnsupportedModel(f"The image encoder folder '{folder}' could not be loaded ({str(e).splitlines()[0]}); it should hold "
                               "config.json and model.safetensors of a CLIPVisionModelWithProjection.") from e
    size = model.config.image_size
    return ImageEncoder(model, CLIPImageProcessor(size=size, crop_size=size))
