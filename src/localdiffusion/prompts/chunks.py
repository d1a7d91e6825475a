"""Split a weighted prompt into CLIP chunks of 75 tokens, as A1111 does.

A port of `FrozenCLIPEmbedderWithCustomWordsBase.tokenize_line` (A1111 `modules/sd_hijack_clip.py`,
AGPL-3.0, AUTOMATIC1111 and contributors):
- when a chunk is full and a comma lies within the last `COMMA_BACKTRACK` tokens, the tokens after
  that comma move to the next chunk (A1111 option `comma_padding_backtrack`, default 20);
- `BREAK` ends the current chunk (even an empty one) and pads it out;
- an embedding's vectors count as tokens and never straddle two chunks.
Each chunk then becomes `[BOS] + tokens + [EOS] + padding` (77 ids) for the text encoder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from localdiffusion.errors import BadInput
from localdiffusion.prompts.attention import BREAK
from localdiffusion.prompts.embeddings import Embedding, EmbeddingIndex

CHUNK_LENGTH = 75
COMMA_BACKTRACK = 20
# Placeholder id where embedding vectors go (A1111 uses 0 too); its embedding is replaced.
EMBEDDING_PLACEHOLDER = 0


@dataclass
class Chunk:
    """Up to 75 token ids with their weights, and the embeddings to splice in (by offset)."""

    tokens: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    fixes: list[tuple[int, Embedding]] = field(default_factory=list)

    def ids(self, bos: int, eos: int, pad: int) -> list[int]:
        """The 77 ids for the text encoder: start, tokens, end, then padding."""
        return [bos, *self.tokens, eos] + [pad] * (CHUNK_LENGTH - len(self.tokens))

    def full_weights(self) -> list[float]:
        """One weight per id of `ids()`: start, end and padding weigh 1.0."""
        return [1.0, *self.weights] + [1.0] * (CHUNK_LENGTH + 1 - len(self.weights))

    def split_after(self, position: int) -> Chunk:
        """Cut this chunk after `position` tokens and return the rest as a new chunk."""
        rest = Chunk(self.tokens[position:], self.weights[position:],
                     [(offset - position, e) for offset, e in self.fixes if offset >= position])
        self.tokens, self.weights = self.tokens[:position], self.weights[:position]
        self.fixes = [(offset, e) for offset, e in self.fixes if offset < position]
        return rest


def split_into_chunks(
    pieces: list[tuple[str, float]],
    tokenize: Callable[[list[str]], list[list[int]]],
    comma_id: int | None,
    embeddings: EmbeddingIndex | None = None,
    comma_backtrack: int = COMMA_BACKTRACK,
) -> list[Chunk]:
    """Chunks for the (text, weight) pieces of `parse_attention`; at least one, maybe empty."""
    chunks: list[Chunk] = []
    chunk = Chunk()
    last_comma = -1

    def close(carry: Chunk | None = None) -> None:
        nonlocal chunk, last_comma
        chunks.append(chunk)
        chunk = carry or Chunk()
        last_comma = -1

    for tokens, (text, weight) in zip(tokenize([text for text, _ in pieces]), pieces):
        if (text, weight) == BREAK:
            close()
            continue
        position = 0
        while position < len(tokens):
            token = tokens[position]
            if token == comma_id:
                last_comma = len(chunk.tokens)
            elif (comma_backtrack and len(chunk.tokens) == CHUNK_LENGTH and last_comma != -1
                  and len(chunk.tokens) - last_comma <= comma_backtrack):
                close(carry=chunk.split_after(last_comma + 1))
            if len(chunk.tokens) == CHUNK_LENGTH:
                close()

            found = embeddings.match(tokens, position) if embeddings is not None else None
            if found is None:
                chunk.tokens.append(token)
                chunk.weights.append(weight)
                position += 1
                continue
            embedding, name_length = found
            if embedding.length > CHUNK_LENGTH:
                raise BadInput(f"The embedding '{embedding.name}' has {embedding.length} vectors; at most {CHUNK_LENGTH} fit in a prompt.", field="prompt")
            if len(chunk.tokens) + embedding.length > CHUNK_LENGTH:
                close()
            chunk.fixes.append((len(chunk.tokens), embedding))
            chunk.tokens += [EMBEDDING_PLACEHOLDER] * embedding.length
            chunk.weights += [weight] * embedding.length
            position += name_length

    if chunk.tokens or not chunks:
        close()
    return chunks
