"""A1111 extra-network tags: `<lora:name:weight>`, `<hypernet:name:weight>`, ...

Every tag that matches A1111's pattern `<(\\w+):([^>]+)>` is removed from the prompt, as A1111 does;
LoRA tags (and their A1111 alias `lyco`) are returned. Arguments follow A1111's LoRA rules:
`<lora:name>` weighs 1.0, `<lora:name:w>` weighs w, `<lora:name:te:unet>` keeps the text-encoder
weight `te`, and a named argument `te=w` overrides the positional one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from localdiffusion.errors import BadInput

EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")
LORA_KINDS = ("lora", "lyco")


@dataclass(frozen=True)
class LoraRef:
    """A LoRA named in a prompt and the weight it asks for."""

    name: str
    weight: float = 1.0


def extract_loras(prompt: str) -> tuple[str, list[LoraRef]]:
    """The prompt without its extra-network tags, and the LoRAs it named, in order."""
    loras: list[LoraRef] = []

    def take(match: re.Match) -> str:
        if match.group(1) in LORA_KINDS:
            loras.append(_lora_ref(match.group(0), match.group(2).split(":")))
        return ""

    return EXTRA_NETWORK.sub(take, prompt), loras


def _lora_ref(tag: str, items: list[str]) -> LoraRef:
    positional, named = _split_arguments(items)
    weight_text = named.get("te", positional[1] if len(positional) > 1 else "1.0")
    try:
        weight = float(weight_text)
    except ValueError:
        raise BadInput(f"The LoRA tag '{tag}' has the weight '{weight_text}'; a weight must be a number such as 0.8.", field="prompt") from None
    return LoraRef(name=positional[0] if positional else items[0], weight=weight)


def _split_arguments(items: list[str]) -> tuple[list[str], dict[str, str]]:
    """A1111's ExtraNetworkParams: `key=value` items are named, all others positional."""
    positional: list[str] = []
    named: dict[str, str] = {}
    for item in items:
        parts = item.split("=", 2)
        if len(parts) == 2:
            named[parts[0]] = parts[1]
        else:
            positional.append(item)
    return positional, named
