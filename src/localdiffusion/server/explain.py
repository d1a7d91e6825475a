"""The studio's explanation API: `POST /api/anatomy` (a prompt's tokens, chunks, schedule and structure)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from localdiffusion.explain.anatomy import MAX_STEPS, AnatomyReport, anatomy_report, library_context, load_lexicon
from localdiffusion.models.tokenizer import load_tokenizer
from localdiffusion.server.deps import get_studio
from localdiffusion.server.studio import Studio

router = APIRouter(prefix="/api", tags=["explain"])

StudioDep = Annotated[Studio, Depends(get_studio)]


class AnatomyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    prompt: str = Field(max_length=20_000)
    negative_prompt: str = Field("", max_length=20_000)
    model: str | None = None
    steps: int = Field(20, ge=1, le=MAX_STEPS)


@lru_cache(maxsize=4)
def _tokenizer(cache_dir: Path) -> Any:
    # Building a CLIPTokenizer reads a 49408-entry vocabulary; once per home is enough.
    return load_tokenizer(cache_dir)


@router.post("/anatomy", response_model=AnatomyReport)
def anatomy(request: AnatomyRequest, studio: StudioDep) -> AnatomyReport:
    """The prompt's token view and structure check; the same JSON as `localdiffusion anatomy --json`."""
    embeddings, family, model = library_context(studio.library, request.model)
    return anatomy_report(request.prompt, _tokenizer(studio.home.cache), negative_prompt=request.negative_prompt,
                          steps=request.steps, embeddings=embeddings, lexicon=load_lexicon(studio.home),
                          model=model, family=family)
