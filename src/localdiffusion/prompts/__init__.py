"""A1111 prompt syntax, turned into conditioning for diffusers text encoders.

The steps, in the order the engine takes them:

1. `extract_loras(prompt) -> (prompt, [LoraRef])` removes `<lora:name:weight>` and every other
   `<kind:...>` extra-network tag, and returns the LoRAs asked for.
2. `schedule(prompt, steps, hires_steps=None) -> [(end_at_step, text)]` resolves prompt editing
   `[from:to:when]` and alternation `[a|b]` (equal to A1111's `get_learned_conditioning_prompt_schedules`).
3. `parse_attention(text) -> [(text, weight)]` reads `(word)`, `(word:1.3)`, `[word]`, escapes and
   `BREAK` (equal to A1111's `parse_prompt_attention`).
4. `PromptEncoder.from_pipeline(pipe, clip_skip=1, embeddings={name: path})` encodes texts:
   - `.encode(text) -> Conditioning` for one scheduled text (steps 3 and on are done inside);
   - `.for_steps(prompt, steps) -> StepConditioning` does steps 2-4: `.at(step_index)` and `.changes`.
5. `match_lengths(cond, uncond)` pads the shorter with empty-prompt chunks, so both batch for CFG.

`Conditioning.embeds` is [1, chunks * 77, D]; `Conditioning.pooled` is SDXL's [1, P] (else None).
Textual-inversion files (`embeddings`) are spliced in wherever the prompt spells their name.
"""

from localdiffusion.prompts.attention import parse_attention
from localdiffusion.prompts.conditioning import Conditioning, StepConditioning, match_lengths
from localdiffusion.prompts.embeddings import Embedding, load_embedding
from localdiffusion.prompts.encoder import FlowPromptEncoder, PromptEncoder
from localdiffusion.prompts.extra_networks import LoraRef, extract_loras
from localdiffusion.prompts.schedule import schedule

__all__ = [
    "Conditioning",
    "Embedding",
    "FlowPromptEncoder",
    "LoraRef",
    "PromptEncoder",
    "StepConditioning",
    "extract_loras",
    "load_embedding",
    "match_lengths",
    "parse_attention",
    "schedule",
]
