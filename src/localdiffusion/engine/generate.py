"""Engine.generate(): a Recipe in, images and one resolved Recipe per image out.

A generation runs in four parts: `prepare` (engine/prepare.py: the one validator, pure), load (the
models, engine/models.py), `bind` (LoRAs, IP-Adapters, ControlNets and attention hooks put on the
cached pipeline, and taken off again on exit, also on an error or a cancel), then the loop (ours,
calling the networks through a Backend, engine/backend.py) and describe (infotexts, hashes, timings).
What watches or steers a run travels in one `RunHooks` (engine/hooks.py).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from localdiffusion.engine import flow
from localdiffusion.engine import images as im
from localdiffusion.engine import reference
from localdiffusion.engine.attention import AttentionRecorder, capture_attention
from localdiffusion.engine.backend import Backend, FastDecodeBackend, TorchBackend
from localdiffusion.engine.compile import compiled_for_run
from localdiffusion.engine.compile import off_reasons as compile_off_reasons
from localdiffusion.engine.conditioning import Prompts, zeros_for_empty
from localdiffusion.engine.control import Control, prepare_control
from localdiffusion.engine.guided import GuidedDenoiser, MaskBlend, ModelPart, StepReporter, UNetNetwork
from localdiffusion.engine.k_sampling import run as k_run
from localdiffusion.engine.k_sampling.denoiser import alphas_cumprod_from_config
from localdiffusion.engine.k_sampling.rng import ImageRNG
from localdiffusion.engine.hooks import Progress, RunHooks, StepWatch
from localdiffusion.engine.inputs import HomeInputs, Inputs
from localdiffusion.engine.models import EngineOptions, Loaded, Models
from localdiffusion.engine.noise import generator_for, image_noise, resolve_seed
from localdiffusion.engine.openvino import OpenVINOBackend, fallback_note, fallback_reason, fast_decode
from localdiffusion.engine.plan import IMAGE_UPSCALERS, LATENT_UPSCALERS, ModeImages, Plan, hires_size
from localdiffusion.engine.prepare import Prepared, prepare
from localdiffusion.engine.previews import CPU_PREVIEW_LATENTS, taesd_preview
from localdiffusion.engine.samplers import Sampler, infotext_params, make_scheduler, resolve_sampler
from localdiffusion.engine.sampling import InpaintLatents, StepState, denoise, step_kwargs
from localdiffusion.engine.shared_attention import SharedAttention, share_attention
from localdiffusion.errors import BadInput, LocalDiffusionError, one_of
from localdiffusion.infotext import to_infotext, with_templates
from localdiffusion.models.info import ModelInfo, base_family
from localdiffusion.models.ip_adapter import ImageEncoder, a1111_module
from localdiffusion.models.lora import load_lora
from localdiffusion.models.taesd import taesd_family_for
from localdiffusion.models.upscalers import resize
from localdiffusion.prompts import PromptEncoder, extract_loras, wildcards
from localdiffusion.recipe import ControlUnit, Recipe, Result

__all__ = ["Engine", "EngineOptions", "Progress", "RunHooks", "LATENT_UPSCALERS", "IMAGE_UPSCALERS"]

VAE_DECODE = ("full", "fast")  # the run option vae_decode: the model's VAE, or TAESD

LORA_STATE = "_localdiffusion_lora_state"  # the pipeline's active (adapter, weight) pairs, in its __dict__


@dataclass
class Bound:
    """A prepared recipe on its loaded, bound models: everything the loop needs besides seeds and latents."""

    pipe: Any
    backend: Backend
    plan: Plan  # its recipe names the ControlNets and IP-Adapters by their 'name [hash]' titles
    encoder: Prompts
    refiner: tuple[Any, Prompts] | None = None  # SDXL refiner pipeline and its prompts
    controls: list[tuple[ControlUnit, Any, Image.Image]] = field(default_factory=list)  # unit, ControlNet, raw map
    references: list[reference.Embeds] = field(default_factory=list)  # per IP-Adapter slot, for the base UNet
    notes: list[str] = field(default_factory=list)  # sentences for the job's log (a backend's fallback to torch)


@dataclass
class Run:
    """One model pass over a batch: everything the loop needs besides the latents."""

    bound: Bound
    seeds: list[int]
    subseeds: list[int]
    on_step: StepWatch | None
    cancel: Callable[[], bool] | None
    generators: list[torch.Generator] = field(default_factory=list)

    @property
    def sampler(self) -> Sampler:
        return resolve_sampler(self.plan.recipe.sampler_name, self.plan.recipe.scheduler)[0]

    @property
    def plan(self) -> Plan:
        return self.bound.plan

    @property
    def backend(self) -> Backend:
        return self.bound.backend


class Engine:
    """Turns Recipes into images. One Engine per process; it keeps models loaded between calls."""

    def __init__(self, library: Any, options: EngineOptions | None = None) -> None:
        self.library = library
        self.home = library.home
        self.settings = library.settings
        self.options = options or EngineOptions()
        self.models = Models(library, self.options)
        self.device, self.dtype, self.cache = self.models.device, self.models.dtype, self.models.cache
        self.inputs: Inputs = HomeInputs(self.home.root)  # pictures by name: kept inputs, or paths on this machine
        self._reading = threading.local()  # .inputs: a job's pictures while its worker runs it (see `reading`)

    # --- models (engine/models.py) ---

    def checkpoint(self, name: str | None) -> ModelInfo:
        """The checkpoint a recipe names (None: the default), by the library's one lookup."""
        return self.library.get(name, kind="checkpoint")

    def reporting_loads(self, on_load: Callable[[Progress], None]) -> Any:
        """Within this block, models that load on this thread are reported to `on_load` (Models.reporting_loads)."""
        return self.models.reporting_loads(on_load)

    def pipeline(self, info: ModelInfo, what: str = "model") -> Any:
        return self.models.pipeline(info, what)

    def controlnet(self, info: ModelInfo, pipe: Any) -> Any:
        return self.models.controlnet(info, pipe)

    def image_encoder(self, folder: Path) -> ImageEncoder:
        return self.models.image_encoder(folder)

    def decode(self, pipe: Any, latents: torch.Tensor) -> list[Image.Image]:
        """Latents to images with the pipeline's VAE (scaling factor, fp16 upcast where needed; SD3's and FLUX's shift)."""
        return (flow.FlowBackend.of(pipe) if flow.is_flow_pipe(pipe) else TorchBackend.of(pipe)).vae_decode(latents)

    # --- generation: prepare -> load -> bind -> iterate -> describe ---

    @contextmanager
    def reading(self, inputs: Inputs) -> Iterator[None]:
        """Within this block, on this thread, the pictures recipes name come from `inputs` unless a call names
        its own: a worker hands over a job's pictures this way, whatever feature the job goes through."""
        previous = getattr(self._reading, "inputs", None)
        self._reading.inputs = inputs
        try:
            yield
        finally:
            self._reading.inputs = previous

    def prepare(self, recipe: Recipe, inputs: Inputs | None = None) -> Prepared:
        """The recipe checked and resolved against the library (engine/prepare.py): pure, no model loads,
        no file written. The studio API and the A1111 API call it before queueing. The pictures come from
        `inputs`, else the job's (`reading`), else this home's."""
        return prepare(recipe, self.library, inputs or getattr(self._reading, "inputs", None) or self.inputs)

    @torch.no_grad()
    def generate(
        self,
        recipe: Recipe,
        hooks: RunHooks | None = None,
        *,
        inputs: Inputs | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        cancel: Callable[[], bool] | None = None,
        on_step: Callable[[StepState, str, int], None] | None = None,
        attention: AttentionRecorder | None = None,
        shared: SharedAttention | None = None,
        vae_decode: str | None = None,
    ) -> Result:
        """Generate the recipe's images. `hooks` (RunHooks) watch and steer the run: progress, cancel, step
        observers, attention capture, shared attention; the keywords of the same names are a shorthand for
        a RunHooks with them. `inputs` gives the pictures the recipe names (default: this home's).
        `vae_decode` ("full" or "fast": TAESD; default EngineOptions.vae_decode) picks the final images'
        decoder, a run option that the recipe does not record; `Result.decoder` says which one made them."""
        if hooks is None:
            hooks = RunHooks(on_progress, cancel, on_step, attention, shared)
        if wildcards.has_wildcards(recipe.prompt) or wildcards.has_wildcards(recipe.negative_prompt):
            return self._generate_each(recipe, hooks, inputs, vae_decode)
        started = time.perf_counter()
        prepared = self.prepare(recipe, inputs)
        decoder = self.decoder_for(vae_decode or self.options.vae_decode, prepared.checkpoint)
        models = self.models.load(prepared)
        fast = self.models.taesd(decoder) if decoder is not None else None
        with self.bind(prepared, models, hooks) as bound:
            if fast is not None:
                identity = {"taesd": self.library.ensure_hash(decoder).sha256}
                bound.backend = FastDecodeBackend(bound.backend, fast_decode(bound.backend, fast, identity))
            loaded = time.perf_counter()
            result = self._iterate(bound, prepared, hooks)
        result.decoder = "fast" if fast is not None else "full"
        result.notes = bound.notes
        return self._describe(prepared, result, started, loaded)

    def _generate_each(self, recipe: Recipe, hooks: RunHooks, inputs: Inputs | None, vae_decode: str | None) -> Result:
        """A recipe with wildcards (prompts/wildcards.py): one run per image, each with the seed the batch gives it
        and the prompts that seed expands to, so each image reproduces alone; the infotexts keep the templates
        as Dynamic Prompts writes them."""
        folder = wildcards.wildcards_folder(self.home.root)
        seed, subseed = resolve_seed(recipe.seed), resolve_seed(recipe.subseed)
        merged = Result()
        for i in range(recipe.batch_size * recipe.n_iter):
            s = (seed + i) % 2**32
            one = recipe.model_copy(update={
                "prompt": wildcards.expand(recipe.prompt, s, folder),
                "negative_prompt": wildcards.expand(recipe.negative_prompt, s, folder, field="negative_prompt"),
                "seed": s, "subseed": (subseed + i) % 2**32, "batch_size": 1, "n_iter": 1})
            part = self.generate(one, hooks, inputs=inputs, vae_decode=vae_decode)
            merged.images += part.images
            merged.recipes += part.recipes
            merged.infotexts += [with_templates(text, recipe.prompt, recipe.negative_prompt) for text in part.infotexts]
            merged.decoder, merged.explanation = part.decoder, part.explanation
            merged.notes += [note for note in part.notes if note not in merged.notes]
            merged.timings = {k: merged.timings.get(k, 0.0) + v for k, v in part.timings.items()}
        return merged

    def decoder_for(self, mode: str, checkpoint: ModelInfo) -> ModelInfo | None:
        """The TAESD that decodes the final images when `mode` is "fast" (None: the model's VAE); refused in one
        sentence when none is installed for the checkpoint's family."""
        if mode not in VAE_DECODE:
            raise BadInput(f"Unknown VAE decode '{mode}'; use {one_of(list(VAE_DECODE))}.", field="vae_decode")
        if mode == "full":
            return None
        if flow.is_flow(checkpoint):
            raise BadInput("Fast decoding (TAESD) is for SD1, SD2 and SDXL models; SD3.5 and FLUX decode with their own VAE.",
                           field="vae_decode")
        info = self.models.taesd_info(checkpoint.family)
        if info is None:
            family = taesd_family_for(checkpoint.family)
            repo = "madebyollin/taesdxl" if family == "sdxl" else "madebyollin/taesd"
            raise BadInput(f"Fast decoding needs TAESD for {'SDXL' if family == 'sdxl' else 'SD1/SD2'} models in "
                           f"{self.home.model_dir('vae-approx')}, and there is none; get it with `localdiffusion models "
                           f"pull {repo} --kind vae-approx`, or decode with the full VAE.", field="vae_decode")
        return info

    def _preview_decoder(self, prepared: Prepared) -> Callable[[torch.Tensor], Image.Image] | None:
        """TAESD previews where it is installed for the model (smaller on a CPU, see CPU_PREVIEW_LATENTS), else
        None: the latent matrix. A TAESD that cannot load leaves the matrix previews."""
        info = self.models.taesd_info(prepared.checkpoint.family)
        if info is None or not self.options.previews or flow.is_flow(prepared.checkpoint):
            return None
        try:
            taesd = self.models.taesd(info)
        except (LocalDiffusionError, OSError, ValueError, RuntimeError):
            return None
        limit = CPU_PREVIEW_LATENTS if self.device.type == "cpu" else None
        return lambda latent: taesd_preview(taesd, latent, limit)

    @contextmanager
    def bind(self, prepared: Prepared, models: Loaded, hooks: RunHooks | None = None) -> Iterator[Bound]:
        """Put the recipe's LoRAs, IP-Adapters, ControlNets and attention hooks on the cached pipeline for the
        block, and take them off again on exit, also on an error or a cancel: the next call starts from the
        plain pipeline whatever this one did."""
        hooks = hooks or RunHooks()
        pipe = models.pipe
        plan, controls = self._with_controls(prepared, models)
        with ExitStack() as stack:
            plan, references = self._with_references(plan, prepared, pipe, stack)
            encoder = self._prompt_encoder(pipe, plan.recipe, prepared, stack)
            refiner = self._refiner(plan.recipe, models.refiner)
            if flow.is_flow_pipe(pipe):  # SD3.5, FLUX: joint attention, no UNet hooks (engine/flow.py)
                yield Bound(pipe, flow.FlowBackend.of(pipe), plan, encoder)
                return
            stack.enter_context(compiled_for_run(pipe.unet, compile_off_reasons(
                attention=hooks.attention is not None, shared=hooks.shared is not None, loras=bool(prepared.loras),
                references=bool(references), controls=bool(controls), cpu_offload=self.options.cpu_offload)))
            if hooks.attention is not None:
                stack.enter_context(capture_attention(pipe.unet, hooks.attention))
            if hooks.shared is not None:
                stack.enter_context(share_attention(pipe.unet, hooks.shared))
            notes: list[str] = []
            backend = self._backend(pipe, prepared, hooks, notes, controls=bool(controls), references=bool(references),
                                    refiner=refiner is not None)
            yield Bound(pipe, backend, plan, encoder, refiner, controls, references, notes)

    def _backend(self, pipe: Any, prepared: Prepared, hooks: RunHooks, notes: list[str], *, controls: bool,
                 references: bool, refiner: bool) -> Backend:
        """The run's networks: torch, or OpenVINO (`EngineOptions.backend`) with the pipeline's active LoRAs baked
        in; a run OpenVINO cannot do uses torch and says so in one sentence in `notes`."""
        if self.options.backend != "openvino":
            return TorchBackend.of(pipe)
        reason = fallback_reason(attention=hooks.attention is not None, shared=hooks.shared is not None,
                                 controls=controls, references=references, refiner=refiner)
        if reason is not None:
            notes.append(fallback_note(reason))
            return TorchBackend.of(pipe)
        info = self.library.ensure_hash(prepared.checkpoint)
        recipe = prepared.recipe
        refs = extract_loras(recipe.prompt)[1] + extract_loras(recipe.negative_prompt)[1]
        loras = [[self.library.ensure_hash(lora).sha256, ref.weight] for ref, lora in zip(refs, prepared.loras)]
        identity = {"model": info.sha256, "family": info.family, "loras": loras, "vae": _vae_files(info.path)}
        return OpenVINOBackend(self.models.openvino(), pipe, identity)

    def _iterate(self, bound: Bound, prepared: Prepared, hooks: RunHooks) -> Result:
        """Every batch of the recipe, one resolved recipe per image."""
        result = Result()
        r = bound.plan.recipe
        seed, subseed = resolve_seed(r.seed), resolve_seed(r.subseed)
        on_step = hooks.step_observer()
        watching = hooks.on_progress is not None or on_step is not None
        previews = self._preview_decoder(prepared) if hooks.on_progress is not None else None
        for iteration in range(r.n_iter):
            first = iteration * r.batch_size
            seeds = [(seed + first + i) % 2**32 for i in range(r.batch_size)]
            subseeds = [(subseed + first + i) % 2**32 for i in range(r.batch_size)]
            progress = StepWatch(iteration, r.n_iter, base_family(prepared.checkpoint.family) == "sdxl", self.options.previews,
                                 hooks.on_progress, on_step, decode_preview=previews) if watching else None
            images = self._run(Run(bound, seeds, subseeds, progress, hooks.cancel))
            for image, s, sub in zip(images, seeds, subseeds):
                result.images.append(image)
                result.recipes.append(self._resolved(r, s, sub))
        return result

    def _describe(self, prepared: Prepared, result: Result, started: float, loaded: float) -> Result:
        """A1111 infotexts (with model, LoRA and IP-Adapter hashes) and the timings."""
        info = prepared.checkpoint
        self.library.ensure_hash(info)
        extra = self._lora_hashes(prepared)
        if prepared.parts is not None:  # Forge's `Module N` entries: a FLUX or SD3.5 file's VAE and text encoders
            from localdiffusion.models.flow import module_names

            extra.update(module_names(prepared.parts))
        modules = [a1111_module(info.family, a.shape) for a in prepared.adapters]
        result.infotexts = [to_infotext(r, model_name=info.name, model_hash=info.short_hash, extra=extra, reference_modules=modules,
                                        sampler_params=infotext_params(r)) for r in result.recipes]
        result.timings = {"load": loaded - started, "generate": time.perf_counter() - loaded, "total": time.perf_counter() - started}
        return result

    def _with_controls(self, prepared: Prepared, models: Loaded) -> tuple[Plan, list[tuple[ControlUnit, Any, Image.Image]]]:
        """The units with their ControlNets; the plan's recipe names each by A1111's 'name [hash]' title."""
        plan, units = prepared.plan, []
        for unit, info in zip(plan.recipe.controls, prepared.controls):
            self.library.ensure_hash(info)
            units.append(unit.model_copy(update={"model": f"{info.name} [{info.short_hash}]"}))
        plan = dataclasses.replace(plan, recipe=plan.recipe.model_copy(update={"controls": units}))
        return plan, list(zip(units, models.controlnets, plan.control_maps))

    def _with_references(self, plan: Plan, prepared: Prepared, pipe: Any, stack: ExitStack) -> tuple[Plan, list[reference.Embeds]]:
        """Install the references' adapters on the UNet for the bind and embed the pictures once.
        The plan's recipe names each adapter by its 'name [hash]' title; each picture keeps the name it was
        given (the engine writes no file: control/units.keep_references keeps paths as inputs before a job)."""
        recipe = plan.recipe
        adapters = [adapter.info for adapter in prepared.adapters]
        encoders = [adapter.encoder for adapter in prepared.adapters]
        slots = reference.slots_for([r.scale for r in recipe.references], adapters, encoders, plan.reference_images)
        if not slots:
            return plan, []
        stack.enter_context(reference.installed(pipe, slots, self.settings.allow_pickle))
        embeds = reference.embed(pipe, slots, [self.image_encoder(s.encoder) for s in slots], self.device)
        refs = []
        for ref, adapter in zip(recipe.references, adapters):
            self.library.ensure_hash(adapter)
            refs.append(ref.model_copy(update={"model": f"{adapter.name} [{adapter.short_hash}]"}))
        return dataclasses.replace(plan, recipe=recipe.model_copy(update={"references": refs})), embeds

    def _resolved(self, recipe: Recipe, seed: int, subseed: int) -> Recipe:
        return recipe.model_copy(update={
            "seed": seed, "subseed": subseed if recipe.subseed_strength > 0 else -1, "batch_size": 1, "n_iter": 1,
        })

    def _prompt_encoder(self, pipe: Any, recipe: Recipe, prepared: Prepared, stack: ExitStack) -> Prompts:
        """The prompts' encoder, with the prompts' LoRAs active on the pipeline until the bind ends."""
        prompt, loras = extract_loras(recipe.prompt)
        negative, negative_loras = extract_loras(recipe.negative_prompt)
        changed = self._apply_loras(pipe, list(zip(loras + negative_loras, prepared.loras)), recipe.model or "")
        if changed:
            stack.callback(self._clear_loras, pipe)
        encoder = self._encoder_for(pipe, recipe.clip_skip, changed)
        return Prompts(encoder, prompt, negative, zero_empty_negative=zeros_for_empty(pipe, negative))

    def _encoder_for(self, pipe: Any, clip_skip: int, weights_changed: bool) -> PromptEncoder:
        """One prompt encoder per pipeline, clip skip and set of embeddings, so encodings are reused
        across generations; its cache is dropped when LoRAs change the text encoder's weights."""
        encoders: dict[Any, PromptEncoder] = pipe.__dict__.setdefault("_localdiffusion_encoders", {})
        if weights_changed:
            self._drop_encodings(pipe)
        embeddings = {e.name: e.path for e in self.library.list("embedding")}
        key = (clip_skip, tuple(sorted((name, str(path)) for name, path in embeddings.items())))
        if key not in encoders:
            backend = flow.FlowBackend.of(pipe) if flow.is_flow_pipe(pipe) else TorchBackend.of(pipe)
            encoders[key] = backend.encode_text(clip_skip, embeddings)
        return encoders[key]

    @staticmethod
    def _drop_encodings(pipe: Any) -> None:
        for cached in pipe.__dict__.get("_localdiffusion_encoders", {}).values():
            cached.clear_cache()

    def _lora_hashes(self, prepared: Prepared) -> dict[str, str]:
        """A1111's `Lora hashes` entry, so that sites and tools can identify the LoRAs used."""
        recipe = prepared.recipe
        refs = extract_loras(recipe.prompt)[1] + extract_loras(recipe.negative_prompt)[1]
        hashes = {ref.name: self.library.ensure_hash(info).short_hash for ref, info in zip(refs, prepared.loras)}
        return {"Lora hashes": ", ".join(f"{name}: {short}" for name, short in hashes.items())} if hashes else {}

    def _refiner(self, recipe: Recipe, pipe: Any) -> tuple[Any, Prompts] | None:
        if pipe is None:
            return None
        # LoRAs are trained for the base model, so the refiner gets the prompts without them.
        prompt, negative = extract_loras(recipe.prompt)[0], extract_loras(recipe.negative_prompt)[0]
        encoder = self._encoder_for(pipe, recipe.clip_skip, weights_changed=False)
        return pipe, Prompts(encoder, prompt, negative, zero_empty_negative=zeros_for_empty(pipe, negative))

    def _apply_loras(self, pipe: Any, loras: list[tuple[Any, ModelInfo]], model_name: str) -> bool:
        """Activate exactly these LoRAs (tag, library entry) at these weights; True when that changed the model's weights."""
        loaded: dict[str, str] = pipe.__dict__.setdefault("_localdiffusion_loras", {})
        names, weights = [], []
        for ref, info in loras:
            adapter = loaded.get(str(info.path))
            if adapter is None:
                adapter = f"lora_{len(loaded)}"
                load_lora(pipe, info.path, adapter, model_name)
                loaded[str(info.path)] = adapter
            names.append(adapter)
            weights.append(ref.weight)
        state = tuple(zip(names, weights))
        if state == pipe.__dict__.get(LORA_STATE, ()):
            return False
        pipe.__dict__[LORA_STATE] = state
        if state:
            pipe.enable_lora()
            pipe.set_adapters(names, adapter_weights=weights)
        else:
            pipe.disable_lora()
        return True

    def _clear_loras(self, pipe: Any) -> None:
        """The end of a bind that activated LoRAs: the pipeline back to its own weights, encodings dropped."""
        if pipe.__dict__.get(LORA_STATE):
            pipe.disable_lora()
            pipe.__dict__[LORA_STATE] = ()
            self._drop_encodings(pipe)

    # --- one batch ---

    def _run(self, run: Run) -> list[Image.Image]:
        if isinstance(run.backend, flow.FlowBackend):
            return flow.run_batch(self, run)
        if run.sampler.k is not None:
            return self._run_a1111(run)
        recipe, inputs = run.plan.recipe, run.plan.inputs
        shape = (1, 4, recipe.height // 8, recipe.width // 8)
        run.generators = [generator_for(s, recipe.rng, self.device) for s in run.seeds]
        noise = self._noise(run, shape)
        if inputs is None:
            latents = self._sample(run, noise, recipe.steps, recipe.width, recipe.height)
            if recipe.enable_hr:
                return self._hires(run, latents)
            return run.backend.vae_decode(latents)
        image_latents = self._encode(run.backend, inputs.image, len(run.seeds))
        inpaint = self._inpaint_latents(run, inputs, image_latents, noise) if inputs.mask is not None else None
        latents = self._sample(run, noise, recipe.steps, recipe.width, recipe.height, image_latents, recipe.denoising_strength, inpaint)
        return [self._finish(image, inputs) for image in run.backend.vae_decode(latents)]

    # --- one batch, as A1111 samples it (engine/guided.py, engine/k_sampling/) ---

    def _run_a1111(self, run: Run) -> list[Image.Image]:
        recipe, inputs, backend = run.plan.recipe, run.plan.inputs, run.backend
        shape = (4, recipe.height // 8, recipe.width // 8)
        if inputs is None:
            latents = self._sample_a1111(run, self._image_rng(run, shape), recipe.steps, recipe.width, recipe.height)
            return self._hires(run, latents) if recipe.enable_hr else backend.vae_decode(latents, truncate=True)
        init = self._encode(backend, inputs.image, len(run.seeds)).float()
        blend = image_cond = None
        if inputs.mask is not None:
            inpaint = self._inpaint_latents(run, inputs, init, torch.zeros_like(init))
            blend = MaskBlend(init, (inpaint.mask >= 0.5).to(init.dtype))
            if inpaint.masked_image_latents is not None:
                image_cond = torch.cat([inpaint.mask, inpaint.masked_image_latents], dim=1)
            if recipe.inpainting_fill in (2, 3):  # A1111's "latent noise" and "latent nothing"
                fill = self._image_rng(run, shape, variation=False).first().to(init) if recipe.inpainting_fill == 2 else 0
                init = init * (1 - blend.repaint) + fill * blend.repaint
                blend = MaskBlend(init, blend.repaint)
        latents = self._sample_a1111(run, self._image_rng(run, shape), recipe.steps, recipe.width, recipe.height, init,
                                     recipe.denoising_strength, blend, image_cond)
        if blend is not None:
            latents = blend(latents)
        return [self._finish(image, inputs) for image in backend.vae_decode(latents, truncate=True)]

    def _image_rng(self, run: Run, shape: tuple[int, int, int], variation: bool = True) -> ImageRNG:
        """The batch's noise as A1111 draws it: one generator per image from its seed, the variation seed
        blended in, the RNG source, and ENSD for the samplers' later draws."""
        recipe = run.plan.recipe
        source = {"cpu": "CPU", "nv": "NV"}.get(recipe.rng, "GPU" if self.device.type == "cuda" else "CPU")
        return ImageRNG(shape, run.seeds, run.subseeds if variation else None, recipe.subseed_strength if variation else 0.0,
                        source=source, eta_noise_seed_delta=recipe.eta_noise_seed_delta, device=self.device,
                        generator_device=self.device if source == "GPU" else None)

    def _sample_a1111(
        self, run: Run, image_rng: ImageRNG, steps: int, width: int, height: int, init: torch.Tensor | None = None,
        strength: float = 1.0, blend: MaskBlend | None = None, image_cond: torch.Tensor | None = None, fix_steps: bool = False,
    ) -> torch.Tensor:
        """One pass of A1111's sampler over the batch: txt2img, or img2img from `init` at `strength` (`fix_steps`:
        exactly `steps` steps, as A1111's hires pass runs)."""
        recipe, bound, sampler = run.plan.recipe, run.bound, run.sampler
        evaluations = steps * (2 if sampler.k.second_order else 1)  # A1111's prompt schedules count evaluations
        total = steps if init is None else k_run.img2img_steps(steps, strength, fix_steps)[1] + 1
        control = self._control(run, width, height, total)
        base = self._model_part(run, bound.pipe, bound.encoder, evaluations, width, height, control, image_cond)
        refiner = None
        if bound.refiner is not None:
            refiner = self._model_part(run, bound.refiner[0], bound.refiner[1], evaluations, width, height, None, None)
        model = GuidedDenoiser(base, recipe.cfg_scale, refiner=refiner, switch_at=recipe.refiner_switch_at, blend=blend,
                               mask_before=sampler.is_timestep_sampler, cancel=run.cancel)
        watch = _shifted_hook(run.on_step, 0, total) if run.on_step is not None else None
        reporter = StepReporter(model, total, watch)
        options = k_run.SamplingOptions(eta=recipe.eta, sgm_noise_multiplier=recipe.sgm_noise_multiplier, img2img_fix_steps=fix_steps)
        is_sdxl = getattr(bound.pipe.unet.config, "addition_embed_type", None) == "text_time"  # for Align Your Steps
        return k_run.sample(sampler.k, model, base.denoiser, image_rng, run.seeds, steps, schedule=recipe.scheduler,
                            options=options, is_sdxl=is_sdxl, callback=reporter, init_latent=init,
                            denoising_strength=strength, device=self.device)

    def _model_part(self, run: Run, pipe: Any, prompts: Prompts, evaluations: int, width: int, height: int,
                    control: Control | None, image_cond: torch.Tensor | None) -> ModelPart:
        """A model's denoiser (its UNet behind the Backend, as the sampler's parameterization wants it) and its conditioning."""
        recipe = run.plan.recipe
        network = UNetNetwork(run.backend if pipe is run.bound.pipe else TorchBackend.of(pipe), control, image_cond)
        config = pipe.scheduler.config
        parameterization = "v" if config.get("prediction_type") == "v_prediction" else "eps"
        precise = torch.float32 if self.device.type == "mps" else torch.float64  # MPS has no float64 (nor has A1111 there)
        alphas_cumprod = alphas_cumprod_from_config(config, dtype=precise).to(self.device)
        denoiser = k_run.denoiser_for(run.sampler.k, network, alphas_cumprod, parameterization)
        conds = prompts.pair_for_run(pipe, evaluations, len(run.seeds), width, height, self.device, recipe.pad_cond_uncond)
        if run.bound.references and pipe is run.bound.pipe:  # the refiner has no IP-Adapter
            conds = reference.with_image_embeds_pair(conds, run.bound.references, len(run.seeds), run.backend.dtype)
        return ModelPart(denoiser, conds, network)

    def _noise(self, run: Run, shape: tuple[int, ...]) -> torch.Tensor:
        recipe = run.plan.recipe
        batch = [
            image_noise(g, shape, sub, recipe.subseed_strength, recipe.rng, self.device)
            for g, sub in zip(run.generators, run.subseeds)
        ]
        return torch.cat(batch).to(self.device, run.backend.dtype)

    def _sample(
        self, run: Run, noise: torch.Tensor, steps: int, width: int, height: int,
        image_latents: torch.Tensor | None = None, strength: float = 1.0, inpaint: InpaintLatents | None = None,
    ) -> torch.Tensor:
        recipe, pipe = run.plan.recipe, run.bound.pipe
        scheduler = make_scheduler(recipe.sampler_name, recipe.scheduler, pipe.scheduler.config, seed=run.seeds[0])
        scheduler.set_timesteps(steps, device=self.device)
        timesteps = scheduler.timesteps
        if image_latents is None or (strength >= 1.0 and inpaint is not None):
            latents = noise * scheduler.init_noise_sigma
        else:
            timesteps = _cut_for_strength(scheduler, steps, strength)
            if len(timesteps) == 0:
                return image_latents
            latents = scheduler.add_noise(image_latents, noise, timesteps[:1].repeat(noise.shape[0]))
        if inpaint is not None and recipe.inpainting_fill in (2, 3) and inpaint.masked_image_latents is None:
            start = noise * scheduler.init_noise_sigma if recipe.inpainting_fill == 2 else torch.zeros_like(latents)
            latents = inpaint.mask * start + (1 - inpaint.mask) * latents
        extra = step_kwargs(scheduler, run.generators)
        control = self._control(run, width, height, len(timesteps))
        for owner, prompts, part, offset in self._segments(run, scheduler, timesteps):
            conditioning = prompts.for_run(owner, steps_run(scheduler, timesteps), scheduler.order, len(run.seeds),
                                           recipe, width, height, self.device)
            if run.bound.references and owner is pipe:  # the refiner has no IP-Adapter
                conditioning = reference.with_image_embeds(conditioning, run.bound.references, len(run.seeds), recipe.cfg_scale > 1.0,
                                                           run.backend.dtype)
            latents = denoise(
                (run.backend if owner is pipe else TorchBackend.of(owner)).unet, scheduler, latents, part, _shifted(conditioning, offset), recipe.cfg_scale,
                extra_step_kwargs=extra, inpaint=inpaint, on_step=_shifted_hook(run.on_step, offset, len(timesteps)),
                cancel=run.cancel, control=control if owner is pipe else None,  # the refiner has no ControlNet
            )
        return latents

    def _control(self, run: Run, width: int, height: int, total: int) -> Control | None:
        inputs = run.plan.inputs
        crop = inputs.crop if inputs is not None else None
        full_size = inputs.original.size if crop is not None and inputs.original is not None else None
        return prepare_control(run.bound.controls, width, height, len(run.seeds), self.device, total, crop=crop,
                               full_size=full_size)

    def _segments(self, run: Run, scheduler: Any, timesteps: torch.Tensor) -> list[tuple[Any, Prompts, torch.Tensor, int]]:
        """Which model denoises which timesteps: the base, then the SDXL refiner from `refiner_switch_at`."""
        bound = run.bound
        if bound.refiner is None:
            return [(bound.pipe, bound.encoder, timesteps, 0)]
        skipped = len(scheduler.timesteps) - len(timesteps)
        switch = min(max(int(len(scheduler.timesteps) * run.plan.recipe.refiner_switch_at) - skipped, 0), len(timesteps))
        refiner, prompts = bound.refiner
        return [(bound.pipe, bound.encoder, timesteps[:switch], 0), (refiner, prompts, timesteps[switch:], switch)]

    def _inpaint_latents(self, run: Run, inputs: ModeImages, image_latents: torch.Tensor, noise: torch.Tensor) -> InpaintLatents:
        h, w = image_latents.shape[-2:]
        mask = torch.from_numpy(_mask_array(inputs.mask)).to(self.device, image_latents.dtype)[None, None]
        latent_mask = F.interpolate(mask, size=(h, w))
        batch = image_latents.shape[0]
        if run.backend.in_channels == 9:
            binary = (mask >= 0.5).to(mask.dtype)
            masked = self._pixels(inputs.image).to(self.device, image_latents.dtype) * (binary < 0.5)
            masked_latents = run.backend.vae_encode(masked).repeat(batch, 1, 1, 1)
            return InpaintLatents(latent_mask.repeat(batch, 1, 1, 1), image_latents, noise, masked_latents)
        return InpaintLatents((latent_mask >= 0.5).to(mask.dtype).repeat(batch, 1, 1, 1), image_latents, noise)

    def _hires(self, run: Run, latents: torch.Tensor) -> list[Image.Image]:
        recipe, backend = run.plan.recipe, run.backend
        width, height = hires_size(recipe)
        if recipe.hr_upscaler in LATENT_UPSCALERS:
            mode = LATENT_UPSCALERS[recipe.hr_upscaler]
            latents = F.interpolate(latents, size=(height // 8, width // 8), mode=mode.removesuffix("-aa"),
                                    antialias=mode.endswith("-aa"))
        elif recipe.hr_upscaler in IMAGE_UPSCALERS:
            resample = IMAGE_UPSCALERS[recipe.hr_upscaler] or Image.Resampling.LANCZOS
            images = [i.resize((width, height), resample) for i in backend.vae_decode(latents)]
            latents = torch.cat([self._encode(backend, i, 1) for i in images])
        else:  # an upscaler model (ESRGAN and kin), as A1111's hires fix offers them
            images = [resize(i, recipe.hr_upscaler, (width, height), self.library, self.device, self.dtype, run.cancel)
                      for i in backend.vae_decode(latents)]
            latents = torch.cat([self._encode(backend, i, 1) for i in images])
        if run.on_step is not None:
            run.on_step.phase = "hires"
        steps = recipe.hr_second_pass_steps or recipe.steps
        if run.sampler.k is not None:  # A1111's second pass: img2img with a fresh RNG at the new size
            image_rng = self._image_rng(run, (4, height // 8, width // 8))
            latents = self._sample_a1111(run, image_rng, steps, width, height, latents.float(), recipe.denoising_strength,
                                         fix_steps=True)
            return backend.vae_decode(latents, truncate=True)
        run.generators = [generator_for(s, recipe.rng, self.device) for s in run.seeds]
        noise = self._noise(run, (1, 4, height // 8, width // 8))
        latents = self._sample(run, noise, steps, width, height, latents, recipe.denoising_strength)
        return backend.vae_decode(latents)

    # --- pixels and latents ---

    def _pixels(self, image: Image.Image) -> torch.Tensor:
        import numpy as np

        array = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
        return torch.from_numpy(array).permute(2, 0, 1)[None]

    def _encode(self, backend: Backend, image: Image.Image, batch: int) -> torch.Tensor:
        return backend.vae_encode(self._pixels(image).to(self.device)).repeat(batch, 1, 1, 1)

    def _finish(self, image: Image.Image, inputs: ModeImages) -> Image.Image:
        """Paste the result back so that pixels outside the mask stay exactly as they were."""
        if inputs.mask is None:
            return image
        if inputs.crop is None:
            return im.overlay(inputs.original, image, inputs.mask)
        x1, y1, x2, y2 = inputs.crop
        size = (x2 - x1, y2 - y1)
        region = im.overlay(inputs.original.crop(inputs.crop), image.resize(size, Image.Resampling.LANCZOS),
                            inputs.mask.resize(size, Image.Resampling.LANCZOS))
        finished = inputs.original.copy()
        finished.paste(region, (x1, y1))
        return finished


def steps_run(scheduler: Any, timesteps: torch.Tensor) -> int:
    """Sampling steps these timesteps make; a second-order sampler spends `order` timesteps per step."""
    return max(1, -(-len(timesteps) // scheduler.order))


def _shifted(conditioning: Callable[[int], Any], offset: int) -> Callable[[int], Any]:
    return lambda i: conditioning(i + offset)


def _shifted_hook(hook: Callable[[StepState], None] | None, offset: int, total: int) -> Callable[[StepState], None] | None:
    """Report a segment's steps as positions in the whole run."""
    if hook is None:
        return None
    return lambda state: hook(dataclasses.replace(state, index=state.index + offset, total=total))


def _cut_for_strength(scheduler: Any, steps: int, strength: float) -> torch.Tensor:
    """img2img: skip the first (1 - strength) of the steps, as diffusers' `get_timesteps`."""
    init_timestep = min(int(steps * strength), steps)
    t_start = max(steps - init_timestep, 0)
    timesteps = scheduler.timesteps[t_start * scheduler.order :]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(t_start * scheduler.order)
    return timesteps


def _vae_files(path: Path) -> list[list[Any]]:
    """A diffusers folder's VAE weights by name, size and time: its hash covers the UNet only, and a VAE swapped in
    the folder must not reuse a converted old one. A single file's hash covers its VAE already."""
    if not path.is_dir():
        return []
    return [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in sorted((path / "vae").glob("*")) if f.is_file()]


def _mask_array(mask: Image.Image):
    import numpy as np

    return np.asarray(mask.convert("L"), dtype=np.float32) / 255.0
