"""The real CLIP BPE tokenizer, built offline.

The BPE merges file that OpenAI's CLIP (and so every Stable Diffusion text encoder) uses ships
inside the `open_clip_torch` wheel. From it we derive the `vocab.json` and `merges.txt` that
transformers' `CLIPTokenizer` reads, exactly as CLIP's own `SimpleTokenizer` builds its vocabulary:
256 byte symbols, the same with `</w>`, 48894 merges, then the two special tokens (49408 in all).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from functools import lru_cache
from pathlib import Path

from localdiffusion.errors import UnsupportedModel
from localdiffusion.store.files import write_text_atomic

MERGE_COUNT = 49152 - 256 - 2
START, END = "<|startoftext|>", "<|endoftext|>"
# SD1's tokenizer pads with the end token; SD2's and SDXL's second tokenizer pad with "!".
PAD_SD1, PAD_OPENCLIP = END, "!"


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def _bpe_file() -> Path:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise UnsupportedModel("The CLIP tokenizer needs the 'open_clip_torch' package; install it with 'pip install open_clip_torch'.")
    path = Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"
    if not path.exists():
        raise UnsupportedModel(f"The CLIP vocabulary file {path} is missing; reinstall 'open_clip_torch'.")
    return path


@lru_cache(maxsize=1)
def _vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    lines = gzip.open(_bpe_file()).read().decode("utf-8").split("\n")
    merges = lines[1 : MERGE_COUNT + 1]
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges] + [START, END]
    return {token: i for i, token in enumerate(vocab)}, merges


def write_tokenizer(folder: Path, pad_token: str = PAD_SD1) -> Path:
    """Write a complete `CLIPTokenizer` folder (vocab, merges, configs) and return it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = _vocab_and_merges()
    write_text_atomic(folder / "vocab.json", json.dumps(vocab, ensure_ascii=False))
    write_text_atomic(folder / "merges.txt", "#version: 0.2\n" + "\n".join(merges) + "\n")
    special = {"bos_token": START, "eos_token": END, "unk_token": END, "pad_token": pad_token}
    config = {**special, "model_max_length": 77, "do_lower_case": True, "tokenizer_class": "CLIPTokenizer",
              "clean_up_tokenization_spaces": True, "errors": "replace"}
    write_text_atomic(folder / "tokenizer_config.json", json.dumps(config, indent=2))
    write_text_atomic(folder / "special_tokens_map.json", json.dumps(special, indent=2))
    return folder


def load_tokenizer(cache_dir: Path, pad_token: str = PAD_SD1):
    """A `CLIPTokenizer` with the real vocabulary, built once under `cache_dir`."""
    from transformers import CLIPTokenizer

    name = "clip-tokenizer-pad-end" if pad_token == PAD_SD1 else "clip-tokenizer-pad-bang"
    folder = Path(cache_dir) / name
    if not (folder / "special_tokens_map.json").exists():
        write_tokenizer(folder, pad_token)
    return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
