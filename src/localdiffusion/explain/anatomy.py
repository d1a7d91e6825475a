"""Prompt anatomy: how a prompt becomes tokens, weights, 75-token chunks and a step schedule
(`prompt_anatomy`), and what it is made of (`structure_check`).

Everything is read through the prompts layer, in the engine's order: `extract_loras`, then
`schedule`, then `parse_attention` and `split_into_chunks` for each scheduled text, so the view
shows exactly what the prompt encoder will see. The structure check is rule-based: phrases are
matched against a lexicon of plain JSON word lists (`explain/lexicon/*.json`), which users extend
with their own files in `HOME/lexicon/*.json`. No network, no language model.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from localdiffusion.errors import BadInput
from localdiffusion.prompts import extract_loras, parse_attention, schedule
from localdiffusion.prompts.attention import BREAK
from localdiffusion.prompts.chunks import CHUNK_LENGTH, EMBEDDING_PLACEHOLDER, Chunk, split_into_chunks
from localdiffusion.prompts.embeddings import EmbeddingIndex

LEXICON_DIR = Path(__file__).resolve().parent / "lexicon"
MAX_STEPS = 150  # Recipe's limit
STRONG_WEIGHT, WEAK_WEIGHT = 1.5, 0.5  # beyond ±50% a weight tends to distort the image
SUBJECT, OTHER = "subject", "other"
CATEGORY_ORDER = (SUBJECT, "medium", "style", "composition", "lighting", "colour", "quality")
# Small words that do not make a phrase more than its lexicon term ("a photo of" is still a medium).
FILLER = frozenset("a an the of and with in on at by for to from over under near behind very".split())

# A1111 marks BREAK with weight -1, so brackets around it turn it into the word 'break' (kept, as A1111 does).
BREAK_IN_BRACKETS = ("BREAK inside brackets is not a chunk break: it is read as the word 'break' with an odd weight; "
                     "move it outside the brackets.")

EndReason = Literal["end", "full", "break", "comma", "embedding"]


# --- token view ---------------------------------------------------------------------------


class TokenView(BaseModel):
    """One token as the text encoder sees it (an embedding's vectors appear one token each)."""

    id: int
    text: str
    weight: float
    piece: int  # index into TextView.pieces
    word_end: bool = True  # False inside a word split into several tokens
    embedding: str | None = None


class PieceView(BaseModel):
    """A stretch of text with one weight, as `parse_attention` returns it, and its tokens."""

    text: str
    weight: float
    is_break: bool = False
    token_ids: list[int] = Field(default_factory=list)
    tokens: list[str] = Field(default_factory=list)


class ChunkView(BaseModel):
    """Up to 75 tokens read by the text encoder as one sequence, and why the chunk ends where it does."""

    index: int
    token_count: int
    tokens: list[TokenView]
    ends_by: EndReason
    moved_to_next: int = 0  # tokens the comma backtrack moved to the next chunk


class TextView(BaseModel):
    """One text the schedule uses, the steps it is used for, and its tokens and chunks."""

    text: str
    steps: list[tuple[int, int]]  # (first, last) step ranges, 1-based and inclusive
    pieces: list[PieceView]
    chunks: list[ChunkView]
    token_count: int
    embeddings: list[str] = Field(default_factory=list)
    cut_by_75_token_tools: str | None = None  # what a tool that stops at 75 tokens would drop


class ScheduleEntry(BaseModel):
    first_step: int
    last_step: int
    text: str


class LoraTag(BaseModel):
    name: str
    weight: float


class EncoderView(BaseModel):
    """What one text encoder of an SD3.5 or FLUX model receives, and how much of it it reads."""

    name: str  # "CLIP-L", "CLIP-G", "T5-XXL"
    receives: str  # one sentence
    token_limit: int  # per chunk (CLIP: 75, chunks joined) or in all (T5: the rest is cut)
    token_count: int | None  # the most any step's text has, for this encoder (None: its tokenizer was not at hand)
    cut: bool = False  # T5: the text is longer than it reads


class Anatomy(BaseModel):
    """The token view of one prompt. `token_count` and `chunk_count` are the most any step sees. `encoders`:
    for SD3.5 and FLUX (several encoders that read the prompt differently), what each one receives."""

    prompt: str
    steps: int
    token_count: int
    chunk_count: int
    loras: list[LoraTag]
    schedule: list[ScheduleEntry]
    texts: list[TextView]
    notes: list[str]
    encoders: list[EncoderView] = []


def prompt_anatomy(prompt: str, tokenizer: Any, steps: int = 20,
                   embeddings: dict[str, Path] | None = None) -> Anatomy:
    """How `prompt` becomes tokens and chunks at each step.

    `tokenizer` is a CLIP tokenizer, a list of them, or a diffusers pipeline (its `tokenizer` and
    `tokenizer_2`); the view follows the first, and a note says when another one splits differently.
    `embeddings` maps textual-inversion names to files, as the engine passes them to the encoder.
    """
    _check_steps(steps)
    t5 = _t5_tokenizer_of(tokenizer)
    tokenizers = [t for t in _tokenizers_of(tokenizer) if t is not t5]
    reader = _Reader(tokenizers[0], embeddings)
    text, loras = extract_loras(prompt)
    plan = [ScheduleEntry(first_step=start, last_step=end, text=t) for start, end, t in _ranges(schedule(text, steps))]
    texts = [reader.view(t, ranges) for t, ranges in _texts_with_steps(plan).items()]
    anatomy = Anatomy(
        prompt=prompt, steps=steps, loras=[LoraTag(name=r.name, weight=r.weight) for r in loras], schedule=plan,
        texts=texts, token_count=max(v.token_count for v in texts), chunk_count=max(len(v.chunks) for v in texts),
        notes=[],
    )
    anatomy.notes = _anatomy_notes(anatomy) + _other_tokenizer_notes(tokenizers[1:], reader, texts)
    if t5 is not None:
        anatomy.encoders = flow_encoders("sd3" if getattr(tokenizer, "tokenizer_3", None) is not None else "flux", texts, t5)
        anatomy.notes += [f"{e.name} reads only its first {e.token_limit} tokens; this prompt has {e.token_count}, so the "
                          "rest is cut." for e in anatomy.encoders if e.cut]
    return anatomy


def _t5_tokenizer_of(source: Any) -> Any:
    """The T5 tokenizer of an SD3 or FLUX pipeline (`tokenizer_3`, or FLUX's `tokenizer_2`), else None."""
    for name in ("tokenizer_3", "tokenizer_2"):
        t = getattr(source, name, None)
        if t is not None and "T5" in type(t).__name__:
            return t
    return None


def flow_encoders(family: str, texts: list[TextView], t5: Any = None) -> list[EncoderView]:
    """SD3.5 and FLUX: the CLIP encoders read the prompt with A1111's weights in 75-token chunks; T5 reads the
    plain text (prompts/encoder.py `plain_text`) up to its limit (counted where its tokenizer `t5` is given)."""
    from localdiffusion.prompts.encoder import T5_TOKENS, plain_text

    flux = family == "flux"
    limit = T5_TOKENS[family]
    clip_count = max(v.token_count for v in texts)
    views = []
    for name in ("CLIP-L",) if flux else ("CLIP-L", "CLIP-G"):
        receives = ("the prompt with its weights, but FLUX keeps only its pooled summary of the first chunk, so "
                    "weights change little" if flux else "the prompt with its weights (A1111's syntax), in 75-token chunks")
        views.append(EncoderView(name=name, receives=receives, token_limit=CHUNK_LENGTH, token_count=clip_count))
    t5_count = max(len(t5(plain_text(v.text), add_special_tokens=True)["input_ids"]) for v in texts) if t5 is not None else None
    views.append(EncoderView(name="T5-XXL", receives="the plain text: weights, emphasis brackets and BREAK removed",
                             token_limit=limit, token_count=t5_count, cut=t5_count is not None and t5_count > limit))
    return views


def _check_steps(steps: int) -> None:
    if not 1 <= steps <= MAX_STEPS:
        raise BadInput(f"Steps {steps} is not allowed; use 1 to {MAX_STEPS}.", field="steps")


def _tokenizers_of(source: Any) -> list[Any]:
    if isinstance(source, (list, tuple)):
        found = [t for t in source if t is not None]
    elif hasattr(source, "get_vocab"):
        found = [source]
    else:  # a pipeline
        found = [t for t in (getattr(source, "tokenizer", None), getattr(source, "tokenizer_2", None)) if t is not None]
    if not found:
        raise BadInput("Prompt anatomy needs a CLIP tokenizer (or a pipeline that has one); none was given.")
    return found


def _ranges(plan: list[tuple[int, str]]) -> list[tuple[int, int, str]]:
    ranges, start = [], 1
    for end, text in plan:
        ranges.append((start, end, text))
        start = end + 1
    return ranges


def _texts_with_steps(plan: list[ScheduleEntry]) -> dict[str, list[tuple[int, int]]]:
    texts: dict[str, list[tuple[int, int]]] = {}
    for entry in plan:
        texts.setdefault(entry.text, []).append((entry.first_step, entry.last_step))
    return texts


class _Reader:
    """Tokenizes and chunks texts exactly as the prompt encoder does for one tokenizer."""

    def __init__(self, tokenizer: Any, embeddings: dict[str, Path] | None) -> None:
        self.tokenizer = tokenizer
        self.comma = tokenizer.get_vocab().get(",</w>")
        self.embeddings = EmbeddingIndex(embeddings, lambda text: self.tokenize([text])[0]) if embeddings else None

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        # The same call as the prompt encoder's, so counts and ids agree with what it encodes.
        return self.tokenizer(texts, truncation=False, add_special_tokens=False, verbose=False)["input_ids"]

    def view(self, text: str, steps: list[tuple[int, int]]) -> TextView:
        pieces = parse_attention(text)
        piece_ids = self.tokenize([t for t, _ in pieces])
        chunks = split_into_chunks(pieces, self.tokenize, self.comma, self.embeddings)
        chunk_views = self._chunk_views(pieces, piece_ids, chunks)
        flat = [i for (t, w), ids in zip(pieces, piece_ids) if (t, w) != BREAK for i in ids]
        return TextView(
            text=text, steps=steps,
            pieces=[self._piece(t, w, ids) for (t, w), ids in zip(pieces, piece_ids)],
            chunks=chunk_views, token_count=sum(c.token_count for c in chunk_views),
            embeddings=sorted({e.name for c in chunks for _, e in c.fixes}),
            cut_by_75_token_tools=self.string(flat[CHUNK_LENGTH:]) or None,
        )

    def _piece(self, text: str, weight: float, ids: list[int]) -> PieceView:
        if (text, weight) == BREAK:
            return PieceView(text=text, weight=1.0, is_break=True)
        return PieceView(text=text, weight=weight, token_ids=ids, tokens=[self.string([i]) for i in ids])

    def string(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), clean_up_tokenization_spaces=False).strip()

    def _chunk_views(self, pieces: list[tuple[str, float]], piece_ids: list[list[int]], chunks: list[Chunk]) -> list[ChunkView]:
        """Walk the chunker's output alongside the pieces' tokens, to tell which piece each token
        came from and why each chunk ended (the chunker itself keeps neither)."""
        # (piece index, token id), with None as the token of a BREAK.
        stream: list[tuple[int, int | None]] = []
        for n, (piece, ids) in enumerate(zip(pieces, piece_ids)):
            stream.extend([(n, None)] if piece == BREAK else [(n, i) for i in ids])
        cursor, views = 0, []
        for index, chunk in enumerate(chunks):
            tokens: list[TokenView] = []
            fixes = dict(chunk.fixes)
            while len(tokens) < len(chunk.tokens):
                while stream[cursor][1] is None:  # cannot happen inside a chunk; kept safe
                    cursor += 1
                n, token_id = stream[cursor]
                weight = chunk.weights[len(tokens)]
                embedding = fixes.get(len(tokens))
                if embedding is None:
                    tokens.append(self._token(token_id, weight, n))
                    cursor += 1
                    continue
                tokens += [TokenView(id=EMBEDDING_PLACEHOLDER, text=f"{embedding.name} {k + 1}/{embedding.length}",
                                     weight=weight, piece=n, embedding=embedding.name) for k in range(embedding.length)]
                cursor += len(self.tokenize([embedding.name])[0])
            reason, moved = "end", 0
            if index < len(chunks) - 1:
                if cursor < len(stream) and stream[cursor][1] is None:
                    reason, cursor = "break", cursor + 1
                else:
                    reason, moved = _early_end(chunk, chunks[index + 1], self.comma)
            views.append(ChunkView(index=index, token_count=len(tokens), tokens=tokens, ends_by=reason, moved_to_next=moved))
        return views

    def _token(self, token_id: int, weight: float, piece: int) -> TokenView:
        raw = self.tokenizer.convert_ids_to_tokens(token_id)
        return TokenView(id=token_id, text=self.string([token_id]), weight=weight, piece=piece,
                         word_end=raw.endswith("</w>"))


def _early_end(chunk: Chunk, following: Chunk, comma: int | None) -> tuple[EndReason, int]:
    if len(chunk.tokens) == CHUNK_LENGTH:
        return "full", 0
    first_fix = following.fixes[0] if following.fixes else None
    if first_fix is not None and first_fix[0] == 0 and len(chunk.tokens) + first_fix[1].length > CHUNK_LENGTH:
        return "embedding", 0
    if chunk.tokens and chunk.tokens[-1] == comma:
        return "comma", CHUNK_LENGTH - len(chunk.tokens)
    return "full", 0


def _anatomy_notes(anatomy: Anatomy) -> list[str]:
    notes = [f"The LoRA '{lora.name}' is applied at weight {lora.weight:g}; its tag is not part of the text."
             for lora in anatomy.loras]
    notes += _schedule_notes(anatomy.schedule)
    if anatomy.chunk_count > 1:
        notes.append("Each chunk is read by the text encoder on its own, so words in different chunks do not see each other.")
    per_text = [(view, _text_notes(view)) for view in anatomy.texts]
    shared = [note for note in per_text[0][1] if all(note in notes_of for _, notes_of in per_text)]
    notes += shared
    for view, notes_of in per_text:
        notes += [f"At {_steps_words(view.steps)}: {note}" for note in notes_of if note not in shared]
    return notes


def _schedule_notes(plan: list[ScheduleEntry]) -> list[str]:
    if len(plan) <= 1:
        return []
    if len(plan) > 4:
        distinct = len({entry.text for entry in plan})
        return [f"The prompt changes {len(plan) - 1} times over {plan[-1].last_step} steps, cycling through {distinct} texts."]
    changes = [f"at step {after.first_step} {_edit_words(before.text, after.text)}" for before, after in zip(plan, plan[1:])]
    return ["The prompt changes during sampling: " + "; ".join(changes) + "."]


def _edit_words(before: str, after: str) -> str:
    """'cat' becomes 'dog', 'hat' appears or 'hat' goes: the words that differ between two texts."""
    old, new = _words(before), _words(after)
    parts = []
    for op, a, b, c, d in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        gone, came = _join_words(old[a:b]), _join_words(new[c:d])
        if op == "replace":
            parts.append(f"'{gone}' becomes '{came}'")
        elif op == "delete":
            parts.append(f"'{gone}' goes")
        elif op == "insert":
            parts.append(f"'{came}' appears")
    return ", ".join(parts) or "only spacing changes"


def _words(text: str) -> list[str]:
    return re.findall(r"[\w'-]+|[^\w\s]", text)


def _join_words(words: list[str]) -> str:
    return re.sub(r" ([,.;:!?)\]])", r"\1", " ".join(words))


def _steps_words(ranges: list[tuple[int, int]]) -> str:
    words = [str(a) if a == b else f"{a}-{b}" for a, b in ranges[:3]]
    many = len(ranges) > 1 or ranges[0][0] != ranges[0][1]
    return ("steps " if many else "step ") + ", ".join(words) + (" and more" if len(ranges) > 3 else "")


def _text_notes(view: TextView) -> list[str]:
    count = len(view.chunks)
    notes = [f"{view.token_count} token{'s' if view.token_count != 1 else ''} in {count} chunk{'s' if count > 1 else ''} "
             f"of up to {CHUNK_LENGTH}."]
    for chunk, following in zip(view.chunks, view.chunks[1:]):
        this, next_ = chunk.index + 1, chunk.index + 2
        if chunk.ends_by == "break":
            notes.append(f"BREAK ends chunk {this} after {chunk.token_count} tokens and pads the rest; "
                         f"chunk {next_} starts{_first_words(following)}.")
        elif chunk.ends_by == "comma":
            notes.append(f"Chunk {this} ends early at a comma: the {chunk.moved_to_next} tokens after it moved to "
                         f"chunk {next_}, so that phrase is not cut in two.")
        elif chunk.ends_by == "embedding":
            notes.append(f"The embedding '{following.tokens[0].embedding}' does not fit in what is left of chunk {this}, "
                         f"so it starts chunk {next_}.")
        else:
            split = " in the middle of a word" if chunk.tokens and not chunk.tokens[-1].word_end else ""
            notes.append(f"Chunk {this} is full at {CHUNK_LENGTH} tokens and breaks{split}; "
                         f"chunk {next_} goes on{_first_words(following)}.")
    if view.cut_by_75_token_tools:
        notes.append("Nothing is cut off here (every chunk is read, as in A1111), but a tool that reads only the first "
                     f"{CHUNK_LENGTH} tokens, such as plain diffusers, would drop '{_shorten(view.cut_by_75_token_tools)}'.")
    if any(p.text == BREAK[0] and not p.is_break for p in view.pieces):
        notes.append(BREAK_IN_BRACKETS)
    if view.embeddings:
        notes.append("Textual-inversion embeddings used: " + ", ".join(f"'{name}'" for name in view.embeddings) + ".")
    return notes


def _first_words(chunk: ChunkView) -> str:
    words = " ".join(t.text for t in chunk.tokens[:4])
    return f" with '{words}'" if words else " empty"


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _other_tokenizer_notes(others: list[Any], first: _Reader, texts: list[TextView]) -> list[str]:
    notes = []
    for number, tokenizer in enumerate(others, start=2):
        other = _Reader(tokenizer, None)
        for view in texts:
            words = [p.text for p in view.pieces if not p.is_break]
            if other.tokenize(words) != first.tokenize(words):
                notes.append(f"Text encoder {number} splits '{_shorten(view.text)}' into other tokens; "
                             "the view shows the first one's.")
                break
    return notes


# --- lexicon --------------------------------------------------------------------------------


class Category(BaseModel):
    """One category of the structure check: its words, and what to suggest when none is found."""

    name: str
    label: str
    terms: list[str] = Field(default_factory=list)
    prefixes: list[str] = Field(default_factory=list)  # a phrase starting with one belongs here ("by ...")
    suggestion: str = ""


class Conflict(BaseModel):
    """Terms from two or more sides of one conflict pull the image in different directions."""

    sides: list[list[str]] = Field(min_length=2)
    why: str


class Lexicon(BaseModel):
    categories: dict[str, Category]
    conflicts: list[Conflict]


class _LexiconFile(BaseModel):
    category: str | None = None
    label: str | None = None
    suggestion: str | None = None
    terms: list[str] = Field(default_factory=list)
    prefixes: list[str] = Field(default_factory=list)
    conflicts: list[Conflict] = Field(default_factory=list)


def load_lexicon(home: Any = None) -> Lexicon:
    """The shipped lexicon, extended by `HOME/lexicon/*.json` when `home` (a Home or a folder) is given.

    A user file has the shipped files' form: `category` with `terms` (and optionally `label`,
    `suggestion`, `prefixes`) adds to that category or makes a new one; `conflicts` adds conflicts.
    """
    lexicon = _shipped_lexicon().model_copy(deep=True)
    if home is not None:
        folder = Path(getattr(home, "root", home)) / "lexicon"
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            _merge(lexicon, _read_lexicon_file(path))
    return lexicon


@lru_cache(maxsize=1)
def _shipped_lexicon() -> Lexicon:
    lexicon = Lexicon(categories={}, conflicts=[])
    files = sorted(LEXICON_DIR.glob("*.json"), key=lambda p: _category_rank(p.stem))
    for path in files:
        _merge(lexicon, _read_lexicon_file(path))
    return lexicon


def _category_rank(name: str) -> int:
    return CATEGORY_ORDER.index(name) if name in CATEGORY_ORDER else len(CATEGORY_ORDER)


def _read_lexicon_file(path: Path) -> _LexiconFile:
    try:
        return _LexiconFile.model_validate(json.loads(path.read_text("utf-8")))
    except (OSError, ValueError, ValidationError) as e:
        raise BadInput(f"The lexicon file {path} is not valid ({e.__class__.__name__}); it must be a JSON object "
                       "with 'category' and 'terms', or 'conflicts', like the files in explain/lexicon.") from None


def _merge(lexicon: Lexicon, data: _LexiconFile) -> None:
    if data.category:
        name = data.category.strip().lower()
        if name == OTHER:
            raise BadInput(f"The lexicon category '{OTHER}' is reserved for unmatched phrases; use another name.")
        category = lexicon.categories.setdefault(name, Category(name=name, label=name.capitalize()))
        category.label = data.label or category.label
        category.suggestion = data.suggestion if data.suggestion is not None else category.suggestion
        category.terms += [t for t in data.terms if t not in category.terms]
        category.prefixes += [p for p in data.prefixes if p not in category.prefixes]
    lexicon.conflicts += data.conflicts


def _normal(text: str) -> str:
    """Lower case, '-' and '_' as spaces, single spaces: 'Close-Up' and 'close_up' read alike."""
    return " ".join(re.sub(r"[-_]", " ", text.lower()).split())


@lru_cache(maxsize=4096)
def _term_pattern(term: str) -> re.Pattern:
    # Whole words only, with an optional plural ending: 'color' finds 'colors', never 'discolored'.
    return re.compile(r"(?<![\w])" + re.escape(_normal(term)) + r"(?:e?s)?(?![\w])")


def _found(term: str, normal_text: str) -> bool:
    return bool(term.strip()) and _term_pattern(term).search(normal_text) is not None


# --- structure check ------------------------------------------------------------------------


class TermMatch(BaseModel):
    category: str
    term: str
    prefix: bool = False  # matched as the start of the phrase ('by ...')


class Phrase(BaseModel):
    """A comma-separated phrase of the prompt, without attention syntax, and where it was sorted."""

    text: str
    weight: float  # the weight furthest from 1.0 inside the phrase
    category: str
    matches: list[TermMatch] = Field(default_factory=list)


class StructureWarning(BaseModel):
    kind: Literal["weight", "conflict", "negated"]
    message: str
    terms: list[str]


class StructureReport(BaseModel):
    phrases: list[Phrase]
    categories: dict[str, list[str]]  # category -> phrases, in lexicon order, then 'other'
    labels: dict[str, str]
    missing: list[str]
    suggestions: list[str]
    warnings: list[StructureWarning]


def structure_check(prompt: str, negative_prompt: str = "", lexicon: Lexicon | None = None,
                    steps: int = 20) -> StructureReport:
    """Sort the prompt's phrases into categories, suggest what is missing and warn about clashes.

    Phrases come from every text the prompt's schedule uses, so `[cat:dog:0.5]` gives both.
    """
    _check_steps(steps)
    lexicon = lexicon or load_lexicon()
    weighted = _weighted_phrases(prompt, steps)
    phrases = _sort_phrases(weighted, lexicon)
    categories = {name: [p.text for p in phrases if p.category == name] for name in [*lexicon.categories, OTHER]}
    covered = {m.category for p in phrases for m in p.matches} | {p.category for p in phrases}
    missing = [name for name in lexicon.categories if name not in covered]
    suggestions = [lexicon.categories[name].suggestion for name in missing if lexicon.categories[name].suggestion]
    if not phrases:
        suggestions = ["The prompt is empty: describe what you want to see, then add a medium, a style and lighting."]
    warnings = _weight_warnings(prompt, steps) + _conflict_warnings(phrases, lexicon)
    warnings += _negated_warnings(phrases, negative_prompt, steps)
    labels = {name: c.label for name, c in lexicon.categories.items()} | {OTHER: "Other details"}
    return StructureReport(phrases=phrases, categories=categories, labels=labels, missing=missing,
                           suggestions=suggestions, warnings=warnings)


def _scheduled_pieces(prompt: str, steps: int) -> list[list[tuple[str, float]]]:
    text, _ = extract_loras(prompt)
    texts = dict.fromkeys(t for _, t in schedule(text, steps))
    return [parse_attention(t) for t in texts]


def _weighted_phrases(prompt: str, steps: int) -> list[tuple[str, float]]:
    """(phrase, weight) for every phrase of every scheduled text, first occurrence kept."""
    found: dict[str, tuple[str, float]] = {}
    for pieces in _scheduled_pieces(prompt, steps):
        for text, weight in _split_phrases(pieces):
            found.setdefault(_normal(text), (text, weight))
    return list(found.values())


def _split_phrases(pieces: list[tuple[str, float]]) -> Iterable[tuple[str, float]]:
    text, weights = "", []
    for piece, weight in pieces:
        if (piece, weight) == BREAK:
            piece, weight = ",", 1.0
        text += piece
        weights += [weight] * len(piece)
    start = 0
    for match in [*re.finditer(r"[,;\n]", text), None]:
        end = match.start() if match else len(text)
        phrase = " ".join(text[start:end].split())
        if phrase:
            inside = [w for ch, w in zip(text[start:end], weights[start:end]) if not ch.isspace()]
            yield phrase, max(inside, key=lambda w: abs(w - 1.0))
        start = end + 1


def _sort_phrases(weighted: list[tuple[str, float]], lexicon: Lexicon) -> list[Phrase]:
    phrases, has_subject = [], False
    for position, (text, weight) in enumerate(weighted):
        matches = _matches(text, lexicon)
        category = _primary(text, matches, lexicon)
        if not has_subject and _is_subject(text, matches, first=position == 0):
            category = SUBJECT
        has_subject = has_subject or category == SUBJECT
        phrases.append(Phrase(text=text, weight=weight, category=category or OTHER, matches=matches))
    return phrases


def _matches(text: str, lexicon: Lexicon) -> list[TermMatch]:
    normal = _normal(text)
    found = []
    for name, category in lexicon.categories.items():
        found += [TermMatch(category=name, term=p.strip(), prefix=True)
                  for p in category.prefixes if normal.startswith(_normal(p) + " ")]
        found += [TermMatch(category=name, term=t) for t in category.terms if _found(t, normal)]
    # A term inside a longer found term of the same category ('light' in 'soft light') says nothing more.
    return [m for m in found if not any(o is not m and o.category == m.category and len(o.term) > len(m.term)
                                        and _found(m.term, _normal(o.term)) for o in found)]


def _primary(text: str, matches: list[TermMatch], lexicon: Lexicon) -> str | None:
    if not matches:
        return None
    order = list(lexicon.categories)
    return max(matches, key=lambda m: (len(_normal(m.term)), -order.index(m.category))).category


def _is_subject(text: str, matches: list[TermMatch], first: bool) -> bool:
    """Until a subject is found: a phrase with no lexicon words; the first phrase when it says anything
    more than its lexicon words ('oil painting of a cat'); a later one when its lexicon words are less
    than half of it ('a red kite over photorealistic hills')."""
    if any(m.prefix for m in matches):  # 'by ...' names an artist, whatever follows
        return False
    words = [w for w in re.findall(r"\w+", _normal(text)) if w not in FILLER]
    rest = _normal(text)
    for match in matches:
        rest = _term_pattern(match.term).sub(" ", rest)
    left = [w for w in re.findall(r"\w+", rest) if w not in FILLER]
    return not matches or (bool(left) if first else len(left) * 2 > len(words))


def _weight_warnings(prompt: str, steps: int) -> list[StructureWarning]:
    warnings, seen = [], set()
    for pieces in _scheduled_pieces(prompt, steps):
        for text, weight in pieces:
            name = " ".join(text.split()).strip(" ,")
            if (text, weight) == BREAK or not name or (name, weight) in seen:
                continue
            seen.add((name, weight))
            if text == BREAK[0]:
                warnings.append(StructureWarning(kind="weight", terms=[name], message=BREAK_IN_BRACKETS))
            elif weight > STRONG_WEIGHT:
                warnings.append(StructureWarning(kind="weight", terms=[name], message=(
                    f"'{name}' has weight {weight:.2f}, more than 50% above normal; weights past {STRONG_WEIGHT} often "
                    "distort the image, so try 1.1 to 1.4.")))
            elif weight < WEAK_WEIGHT:
                warnings.append(StructureWarning(kind="weight", terms=[name], message=(
                    f"'{name}' has weight {weight:.2f}, less than half of normal; such a faint word does little, so "
                    "delete it or move it to the negative prompt.")))
    return warnings


def _conflict_warnings(phrases: list[Phrase], lexicon: Lexicon) -> list[StructureWarning]:
    whole = ", ".join(_normal(p.text) for p in phrases)
    warnings = []
    for conflict in lexicon.conflicts:
        hits = [t for t in (_first_term(side, whole) for side in conflict.sides) if t is not None]
        if len(hits) >= 2:
            named = " and ".join(f"'{t}'" for t in hits)
            warnings.append(StructureWarning(kind="conflict", terms=hits, message=(
                f"{named} pull in different directions ({conflict.why}): keep one, or weight the other down.")))
    return warnings


def _first_term(terms: list[str], normal_text: str) -> str | None:
    """The term that appears first in the text (the longest where several start together)."""
    found = [(m.start(), -len(t), t) for t in terms if t.strip() and (m := _term_pattern(t).search(normal_text))]
    return min(found)[2] if found else None


def _negated_warnings(phrases: list[Phrase], negative_prompt: str, steps: int) -> list[StructureWarning]:
    if not negative_prompt.strip():
        return []
    negative = {_normal(text) for text, _ in _weighted_phrases(negative_prompt, steps)}
    both = [p.text for p in phrases if _normal(p.text) in negative]
    return [StructureWarning(kind="negated", terms=[text], message=(
        f"'{text}' is in both the prompt and the negative prompt, so the two cancel out; keep it in one.")) for text in both]


# --- both together ---------------------------------------------------------------------------


class AnatomyReport(BaseModel):
    """What `localdiffusion anatomy --json` prints and `POST /api/anatomy` answers."""

    prompt: Anatomy
    negative: Anatomy | None = None
    structure: StructureReport
    model: str | None = None
    family: str | None = None


def anatomy_report(prompt: str, tokenizer: Any, negative_prompt: str = "", steps: int = 20,
                   embeddings: dict[str, Path] | None = None, lexicon: Lexicon | None = None,
                   model: str | None = None, family: str | None = None) -> AnatomyReport:
    """The token view of both prompts and the structure check of the prompt."""
    positive = prompt_anatomy(prompt, tokenizer, steps, embeddings)
    if family and family.startswith("sdxl"):
        positive.notes.append("SDXL reads the prompt with two text encoders; both see these same tokens and chunks.")
    if family in ("sd3", "flux") and not positive.encoders:  # no T5 tokenizer at hand: what each encoder receives
        positive.encoders = flow_encoders(family, positive.texts)
    return AnatomyReport(
        prompt=positive,
        negative=prompt_anatomy(negative_prompt, tokenizer, steps, embeddings) if negative_prompt.strip() else None,
        structure=structure_check(prompt, negative_prompt, lexicon, steps),
        model=model, family=family,
    )


def library_context(library: Any, model: str | None = None) -> tuple[dict[str, Path], str | None, str | None]:
    """From a `ModelLibrary`: the embeddings the engine would splice in, and the named checkpoint's
    family and name (None, None without a model; an unknown name raises ModelNotFound)."""
    embeddings = {e.name: e.path for e in library.list("embedding")}
    if not model:
        return embeddings, None, None
    info = library.get(model)
    return embeddings, info.family, info.name
