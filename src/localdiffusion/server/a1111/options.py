"""A1111's options: reading and setting them, each value checked, and their value for one request."""

from __future__ import annotations

import json
import re
from typing import Any, Callable

from fastapi.exceptions import RequestValidationError

from localdiffusion.errors import BadInput, ModelNotFound, one_of
from localdiffusion.server.a1111.checkpoints import current_checkpoint, find_checkpoint, model_title
from localdiffusion.server.a1111.schemas import GenerationRequest
from localdiffusion.server.a1111.state import DEFAULT_OPTIONS, A1111State
from localdiffusion.server.studio import Studio

RANDN_SOURCES = {"CPU": "cpu", "GPU": "device", "NV": "nv"}
VAE_CHOICES = ("Automatic", "None")
# A1111 keeps every option of its own settings table (several hundred; clients set those this server has no
# use for) and fails on other keys. Those this server does not use are kept, so that clients read back what
# they set, but within bounds: a name like A1111's, a short value, and a limited number of them.
OPTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MAX_OPTION_JSON = 1024
MAX_OTHER_OPTIONS = 100


def read_options(studio: Studio, state: A1111State) -> dict[str, Any]:
    """The options as set here, with the current checkpoint's title and hash (None when there is none)."""
    options = dict(state.options)
    try:
        model = studio.library.ensure_hash(current_checkpoint(studio, state))
        options.update(sd_model_checkpoint=model_title(model), sd_checkpoint_hash=model.sha256)
    except ModelNotFound:
        options.update(sd_model_checkpoint=None, sd_checkpoint_hash=None)
    return options


def apply_options(studio: Studio, state: A1111State, options: dict[str, Any]) -> None:
    """Check every option first, then set them all; `sd_model_checkpoint` chooses the model."""
    checked = {key: _checked_option(studio, key, value) for key, value in options.items()}
    with state.lock:
        others = {key for key in [*state.options, *checked] if key not in DEFAULT_OPTIONS and key != "sd_model_checkpoint"}
        if len(others) > MAX_OTHER_OPTIONS:
            key = next(k for k in checked if k in others and k not in state.options)
            raise _option_error(key, f"this server keeps at most {MAX_OTHER_OPTIONS} options it does not use, and it has "
                                     f"{len(others & set(state.options))} already")
        model = checked.pop("sd_model_checkpoint", None)
        if model is not None:
            state.checkpoint = model.name
        state.options.update(checked)


def setting(req: GenerationRequest, state: A1111State, key: str) -> Any:
    """An option's value for one request: its override_settings, else the options set here, else the default."""
    overrides = req.override_settings or {}
    return overrides.get(key, state.options.get(key, DEFAULT_OPTIONS.get(key)))


def checked_setting(key: str, value: Any) -> Any:
    """One of the options this server checks, its value checked (one sentence naming the option otherwise)."""
    return _VALUE_CHECKS[key](value)


def randn_device(source: Any, field_name: str) -> str:
    """The Recipe's `rng` for an A1111 `randn_source`."""
    if source not in RANDN_SOURCES:
        raise BadInput(f"Unknown randn_source '{source}'; use {one_of(list(RANDN_SOURCES))}.", field=field_name)
    return RANDN_SOURCES[source]


def _checked_option(studio: Studio, key: str, value: Any) -> Any:
    if key == "sd_model_checkpoint":
        if not isinstance(value, str):
            raise _option_error(key, "must be a checkpoint title such as 'name.safetensors [hash]'")
        return studio.library.ensure_hash(find_checkpoint(studio, value))
    check = _VALUE_CHECKS.get(key)
    if check:
        return check(value)
    if key not in DEFAULT_OPTIONS:
        _check_other_option(key, value)
    return value


def _check_other_option(key: str, value: Any) -> None:
    """An option this server does not use: kept when it could be one of A1111's, and short."""
    if not OPTION_NAME.fullmatch(key):
        raise _option_error(key[:80], "is not an option name (A1111's are letters, digits and '_', at most 64)")
    size = len(json.dumps(value, ensure_ascii=False))
    if size > MAX_OPTION_JSON:
        raise _option_error(key, f"its value is {size:,} characters as JSON, above the limit of {MAX_OPTION_JSON:,} for an option")


def _clip_skip(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or not 1 <= value <= 12:
        raise _option_error("CLIP_stop_at_last_layers", "must be a whole number from 1 to 12")
    return int(value)


def _samples_format(value: Any) -> str:
    if str(value).lower() != "png":
        raise BadInput(f"The samples_format '{value}' is not supported; this server answers with 'png' images.",
                       field="samples_format")
    return "png"


def _sd_vae(value: Any) -> Any:
    if value not in VAE_CHOICES:
        raise BadInput(f"The sd_vae '{value}' cannot be chosen here; use {one_of(list(VAE_CHOICES))} (the model's own VAE).",
                       field="sd_vae")
    return value


def _randn_source(value: Any) -> Any:
    randn_device(value, "randn_source")
    return value


def _whole_number(key: str, low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or not low <= value <= high:
            raise _option_error(key, f"must be a whole number from {low} to {high:,}")
        return int(value)

    return check


def _fraction(key: str) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise _option_error(key, "must be a number from 0 to 1")
        return float(value)

    return check


def _flag(key: str) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        if not isinstance(value, bool):
            raise _option_error(key, "must be true or false")
        return value

    return check


_VALUE_CHECKS: dict[str, Callable[[Any], Any]] = {
    "CLIP_stop_at_last_layers": _clip_skip,
    "samples_format": _samples_format,
    "sd_vae": _sd_vae,
    "randn_source": _randn_source,
    "eta_noise_seed_delta": _whole_number("eta_noise_seed_delta", 0, 2**32 - 1),
    "eta_ancestral": _fraction("eta_ancestral"),
    "eta_ddim": _fraction("eta_ddim"),
    "sgm_noise_multiplier": _flag("sgm_noise_multiplier"),
    "pad_cond_uncond": _flag("pad_cond_uncond"),
}


def _option_error(key: str, why: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", key), "msg": why, "type": "value_error"}])
