"""Engine.generate(): a Recipe in, images and one resolved Recipe per image out."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from localdiffusion.engine import images as im
from localdiffusion.engine import reference
from localdiffusion.engine.attention import AttentionRecorder, capture_attention
from localdiffusion.engine.conditioning import Prompts, zeros_for_empty
from localdiffusion.engine.control import Control, prepare_control
from localdiffusion.engine.device import memory_budget, pick_device, pick_dtype
from localdiffusion.engine.noise import generator_for, image_noise, resolve_seed
from localdiffusion.engine.inputs import HomeInputs, Inputs
from localdiffusion.engine.plan import IMAGE_UPSCALERS, LATENT_UPSCALERS, ModeImages, Plan, hires_size
from localdiffusion.engine.plan import check_hires_upscaler as check_hires_upscaler  # noqa: F401  (re-exported)
from localdiffusion.engine.plan import hires_upscalers as hires_upscalers  # noqa: F401  (re-exported)
from localdiffusion.engine.prepare import Adapter, Prepared, prepare
from localdiffusion.engine.previews import latent_to_rgb
from localdiffusion.engine.samplers import make_scheduler
from localdiffusion.engine.sampling import InpaintLatents, StepState, denoise, step_kwargs
from localdiffusion.engine.shared_attention import SharedAttention, share_attention
from localdiffusion.errors import BadInput
from localdiffusion.infotext import to_infotext
from localdiffusion.models.cache import PipelineCache
from localdiffusion.models.controlnet import LoadedControlNet, load_controlnet
from localdiffusion.models.info import ModelInfo, base_family
from localdiffusion.models.ip_adapter import ImageEncoder, a1111_module, load_image_encoder
from localdiffusion.models.loader import load_pipeline
from localdiffusion.models.lora import load_lora
from localdiffusion.models.upscalers import resize
from localdiffusion.prompts import PromptEncoder, extract_loras
from localdiffusion.recipe import ControlUnit, Recipe, Result

@dataclass
class EngineOptions:
    device: str | None = None  # None: CUDA, then MPS, then CPU
    dtype: str | None = None  # None: fp16 on a GPU, fp32 on the CPU
    attention_slicing: bool = False
    vae_tiling: bool = False  # decode large images in tiles, with bounded memory
    cpu_offload: bool = False  # keep only the running component on the GPU (small GPUs)
    previews: bool = True  # cheap previews of the predicted image in progress events


@dataclass
class Progress:
    step: int  # 1-based; 0 in the "load" phase, before any step has run
    total: int  # the pass's steps (in the "load" phase too, so that step/total reads "nothing sampled yet")
    iteration: int  # which batch of n_iter, 0-based
    iterations: int
    phase: str  # "load", "sample" or "hires"
    preview: Image.Image | None = None
    # The "load" phase: the models that were not in memory yet load one after another, before the first
    # step. `loading` names the one loading now ("" once it has loaded); `loaded` of `parts` are done.
    loading: str = ""
    loaded: int = 0
    parts: int = 0


@dataclass
class LoadWatch:
    """Progress events of the load phase: one as each model starts loading and one as it is in memory.
    diffusers gives no finer progress within one model, so a part is a whole checkpoint or ControlNet."""

    on_load: Callable[[Progress], None]
    total: int  # the recipe's steps
    iterations: int
    parts: int  # how many models are not in memory yet
    loaded: int = 0

    def begin(self, what: str) -> None:
        self.parts = max(self.parts, self.loaded + 1)
        self._emit(what)

    def end(self) -> None:
        self.loaded += 1
        self._emit("")

    def _emit(self, what: str) -> None:
        self.on_load(Progress(0, self.total, 0, self.iterations, "load", loading=what, loaded=self.loaded, parts=self.parts))


@dataclass
class StepWatch:
    """Who watches the steps of one batch: progress events (with cheap previews) and step observers
    (explanations), told which batch and which pass ("sample" or "hires") a step belongs to."""

    iteration: int
    iterations: int
    sdxl: bool
    previews: bool
    on_progress: Callable[[Progress], None] | None
    on_step: Callable[[StepState, str, int], None] | None
    phase: str = "sample"

    def __call__(self, state: StepState) -> None:
        if self.on_step is not None:
            self.on_step(state, self.phase, self.iteration)
        if self.on_progress is not None:
            preview = latent_to_rgb(state.x0[0], sdxl=self.sdxl) if self.previews else None
            self.on_progress(Progress(state.index + 1, state.total, self.iteration, self.iterations, self.phase, preview))


@dataclass
class Run:
    """One model pass over a batch: everything the loop needs besides the latents."""

    pipe: Any
    plan: Plan
    seeds: list[int]
    subseeds: list[int]
    encoder: Any
    on_step: StepWatch | None
    cancel: Callable[[], bool] | None
    refiner: tuple[Any, Prompts] | None = None  # SDXL refiner pipeline and its prompts
    generators: list[torch.Generator] = field(default_factory=list)
    controls: list[tuple[ControlUnit, Any, Image.Image]] = field(default_factory=list)  # unit, ControlNet, raw map
    references: list[reference.Embeds] = field(default_factory=list)  # per IP-Adapter slot, for the base UNet


class Engine:
    """Turns Recipes into images. One Engine per process; it keeps models loaded between calls."""

    def __init__(self, library: Any, options: EngineOptions | None = None) -> None:
        self.library = library
        self.home = library.home
        self.settings = library.settings
        self.options = options or EngineOptions()
        self.device = pick_device(self.options.device)
        self.dtype = pick_dtype(self.device, self.options.dtype)
        self.cache = PipelineCache(memory_budget(self.device, self.settings.cache_budget_gb))
        self.inputs: Inputs = HomeInputs(self.home.root)  # pictures by name: kept inputs, or paths on this machine
        self._loads = threading.local()  # .sink: reporting_loads()' listener; .watch: its LoadWatch in generate()

    # --- models ---

    def checkpoint(self, name: str | None) -> ModelInfo:
        """The checkpoint a recipe names (None: the default), by the library's one lookup."""
        return self.library.get(name, kind="checkpoint")

    def _pipeline_key(self, info: ModelInfo) -> tuple:
        return (str(info.path), str(self.dtype), str(self.device))

    def _controlnet_key(self, info: ModelInfo) -> tuple:
        return ("controlnet", str(info.path), str(self.dtype), str(self.device))

    def _image_encoder_key(self, folder: Path) -> tuple:
        return ("image_encoder", str(folder), str(self.dtype), str(self.device))

    @contextmanager
    def reporting_loads(self, on_load: Callable[[Progress], None]) -> Iterator[None]:
        """Within this block, models that load on this thread are reported to `on_load` as Progress of the
        "load" phase (step 0 of the recipe's steps; `loading`, `loaded` and `parts` say what and how far).
        The worker uses it, so a job's first run of a model says so; `on_progress` callers see only steps."""
        previous = getattr(self._loads, "sink", None)
        self._loads.sink = on_load
        try:
            yield
        finally:
            self._loads.sink = previous

    def _cached(self, key: tuple, what: str, load: Callable[[], Any]) -> Any:
        """From the cache, or loaded into it; a load is announced to reporting_loads()' listener, if any."""
        watch: LoadWatch | None = getattr(self._loads, "watch", None)
        sink = getattr(self._loads, "sink", None)
        if watch is None and sink is not None:  # a load outside generate(): one part, before any steps are known
            watch = LoadWatch(sink, 0, 1, 1)
        if watch is None:
            return self.cache.get(key, load)

        def announced() -> Any:
            watch.begin(what)
            loaded = load()
            watch.end()
            return loaded

        return self.cache.get(key, announced)

    def pipeline(self, info: ModelInfo, what: str = "model") -> Any:
        return self._cached(self._pipeline_key(info), f"{what} '{info.name}'", lambda: self._load(info))

    def _load(self, info: ModelInfo) -> Any:
        pipe = load_pipeline(info, self.home.cache, self.dtype, allow_pickle=self.settings.allow_pickle)
        if self.options.cpu_offload and self.device.type == "cuda":
            pipe.enable_model_cpu_offload(device=self.device)
        else:
            pipe.to(self.device)
        if self.options.attention_slicing:
            pipe.enable_attention_slicing()
        if self.options.vae_tiling:
            pipe.vae.enable_tiling()
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def controlnet(self, info: ModelInfo, pipe: Any) -> Any:
        """A ControlNet on the engine's device and dtype, kept in the same cache as the pipelines."""
        def load() -> LoadedControlNet:
            model = load_controlnet(info, self.dtype, self.settings.allow_pickle, base_unet=dict(pipe.unet.config))
            return LoadedControlNet(model.to(self.device))

        return self._cached(self._controlnet_key(info), f"ControlNet '{info.name}'", load).model

    def image_encoder(self, folder: Path) -> ImageEncoder:
        """An IP-Adapter's CLIP image encoder on the engine's device and dtype, in the pipeline cache."""
        def load() -> ImageEncoder:
            encoder = load_image_encoder(folder, self.dtype, self.settings.allow_pickle)
            encoder.model.to(self.device)
            return encoder

        return self._cached(self._image_encoder_key(folder), "image encoder of the reference images", load)

    def _not_loaded(self, keys: list[tuple]) -> int:
        """How many of these models (cache keys, repeats counted once) are not in memory yet."""
        cached = set(self.cache.keys())
        return len({key for key in keys if key not in cached})

    def _with_references(self, plan: Plan, found: list[Adapter], pipe: Any) -> tuple[Plan, list[reference.Embeds]]:
        """Install the references' adapters on the UNet (or take them out) and embed the pictures once.
        The plan's recipe names each adapter by its 'name [hash]' title and each picture by its kept input."""
        recipe = plan.recipe
        adapters = [adapter.info for adapter in found]
        encoders = [adapter.encoder for adapter in found]
        slots = reference.slots_for([r.scale for r in recipe.references], adapters, encoders, plan.reference_images)
        reference.install(pipe, slots, self.settings.allow_pickle)
        if not slots:
            return plan, []
        embeds = reference.embed(pipe, slots, [self.image_encoder(s.encoder) for s in slots], self.device)
        refs = []
        for ref, adapter, image in zip(recipe.references, adapters, plan.reference_images):
            self.library.ensure_hash(adapter)
            kept = reference.keep_reference(ref.image, image, self.home.root)
            refs.append(ref.model_copy(update={"model": f"{adapter.name} [{adapter.short_hash}]", "image": kept}))
        return dataclasses.replace(plan, recipe=recipe.model_copy(update={"references": refs})), embeds

    def _with_controls(self, plan: Plan, infos: list[ModelInfo], pipe: Any) -> tuple[Plan, list[tuple[ControlUnit, Any, Image.Image]]]:
        """Load the units' ControlNets; the plan's recipe names each by A1111's 'name [hash]' title."""
        units = []
        for unit, info in zip(plan.recipe.controls, infos):
            self.library.ensure_hash(info)
            units.append(unit.model_copy(update={"model": f"{info.name} [{info.short_hash}]"}))
        plan = dataclasses.replace(plan, recipe=plan.recipe.model_copy(update={"controls": units}))
        return plan, [(u, self.controlnet(info, pipe), raw) for u, info, raw in zip(units, infos, plan.control_maps)]

    # --- generation ---

    def prepare(self, recipe: Recipe, inputs: Inputs | None = None) -> Prepared:
        """The recipe checked and resolved against the library (engine/prepare.py): pure, no model loads,
        no file written. The studio API and the A1111 API call it before queueing."""
        return prepare(recipe, self.library, inputs or self.inputs)

    @torch.no_grad()
    def generate(
        self,
        recipe: Recipe,
        on_progress: Callable[[Progress], None] | None = None,
        cancel: Callable[[], bool] | None = None,
        on_step: Callable[[StepState, str, int], None] | None = None,
        attention: AttentionRecorder | None = None,
        shared: SharedAttention | None = None,
    ) -> Result:
        """Generate the recipe's images. `on_progress` gets a Progress per step (with a cheap preview),
        `on_step` the raw StepState (latents, the x0 prediction, unconditional and conditional
        predictions) with the pass ("sample"/"hires") and batch index; `cancel` is polled every step.
        `attention` records the base UNet's cross-attention maps (word heatmaps) during the run; `shared`
        keeps (while writing) or attends to (while reading) up-block self-attention tokens across runs."""
        started = time.perf_counter()
        prepared = self.prepare(recipe)
        plan, info, control_infos, adapter_infos, refiner_info = (prepared.plan, prepared.checkpoint, prepared.controls,
                                                                  prepared.adapters, prepared.refiner)
        keys = [self._pipeline_key(info), *(self._controlnet_key(c) for c in control_infos),
                *(self._image_encoder_key(a.encoder) for a in adapter_infos),
                *([self._pipeline_key(refiner_info)] if refiner_info else [])]
        sink, outer = getattr(self._loads, "sink", None), getattr(self._loads, "watch", None)
        self._loads.watch = LoadWatch(sink, plan.recipe.steps, plan.recipe.n_iter, self._not_loaded(keys)) if sink else None
        try:
            pipe = self.pipeline(info)
            plan, controls = self._with_controls(plan, control_infos, pipe)
            plan, references = self._with_references(plan, adapter_infos, pipe)
            refiner_pipe = self.pipeline(refiner_info, "refiner") if refiner_info else None
        finally:
            self._loads.watch = outer
        loaded = time.perf_counter()
        encoder = self._prompt_encoder(pipe, plan.recipe)
        refiner = self._refiner(plan.recipe, refiner_pipe)
        result = Result(timings={"load": loaded - started})
        seed, subseed = resolve_seed(plan.recipe.seed), resolve_seed(plan.recipe.subseed)
        r = plan.recipe
        if attention is not None:
            on_step = _recording(attention, on_step)
        with (capture_attention(pipe.unet, attention) if attention is not None else nullcontext(),
              share_attention(pipe.unet, shared) if shared is not None else nullcontext()):
            for iteration in range(r.n_iter):
                first = iteration * r.batch_size
                seeds = [(seed + first + i) % 2**32 for i in range(r.batch_size)]
                subseeds = [(subseed + first + i) % 2**32 for i in range(r.batch_size)]
                watching = on_progress is not None or on_step is not None
                progress = StepWatch(iteration, r.n_iter, base_family(info.family) == "sdxl", self.options.previews,
                                     on_progress, on_step) if watching else None
                run = Run(pipe, plan, seeds, subseeds, encoder, progress, cancel, refiner, controls=controls, references=references)
                images = self._run(run)
                for image, s, sub in zip(images, seeds, subseeds):
                    result.images.append(image)
                    result.recipes.append(self._resolved(plan.recipe, s, sub))
        self.library.ensure_hash(info)
        extra = self._lora_hashes(plan.recipe)
        modules = [a1111_module(info.family, a.shape) for a in adapter_infos]
        result.infotexts = [to_infotext(r, model_name=info.name, model_hash=info.short_hash, extra=extra, reference_modules=modules)
                            for r in result.recipes]
        result.timings["generate"] = time.perf_counter() - loaded
        result.timings["total"] = time.perf_counter() - started
        return result

    def _resolved(self, recipe: Recipe, seed: int, subseed: int) -> Recipe:
        return recipe.model_copy(update={
            "seed": seed, "subseed": subseed if recipe.subseed_strength > 0 else -1, "batch_size": 1, "n_iter": 1,
        })

    def _prompt_encoder(self, pipe: Any, recipe: Recipe) -> Prompts:
        prompt, loras = extract_loras(recipe.prompt)
        negative, negative_loras = extract_loras(recipe.negative_prompt)
        changed = self._apply_loras(pipe, loras + negative_loras, recipe.model or "")
        encoder = self._encoder_for(pipe, recipe.clip_skip, changed)
        return Prompts(encoder, prompt, negative, zero_empty_negative=zeros_for_empty(pipe, negative))

    def _encoder_for(self, pipe: Any, clip_skip: int, weights_changed: bool) -> PromptEncoder:
        """One prompt encoder per pipeline, clip skip and set of embeddings, so encodings are reused
        across generations; its cache is dropped when LoRAs change the text encoder's weights."""
        encoders: dict[Any, PromptEncoder] = pipe.__dict__.setdefault("_localdiffusion_encoders", {})
        if weights_changed:
            for cached in encoders.values():
                cached.clear_cache()
        embeddings = {e.name: e.path for e in self.library.list("embedding")}
        key = (clip_skip, tuple(sorted((name, str(path)) for name, path in embeddings.items())))
        if key not in encoders:
            encoders[key] = PromptEncoder.from_pipeline(pipe, clip_skip=clip_skip, embeddings=embeddings)
        return encoders[key]

    def _lora_hashes(self, recipe: Recipe) -> dict[str, str]:
        """A1111's `Lora hashes` entry, so that sites and tools can identify the LoRAs used."""
        refs = extract_loras(recipe.prompt)[1] + extract_loras(recipe.negative_prompt)[1]
        hashes = {ref.name: self.library.ensure_hash(self._lora(ref.name)).short_hash for ref in refs}
        return {"Lora hashes": ", ".join(f"{name}: {short}" for name, short in hashes.items())} if hashes else {}

    def _lora(self, name: str) -> ModelInfo:
        """A LoRA named in a prompt: by library name or hash only, never a path on this machine."""
        if "/" in name or "\\" in name:
            raise BadInput(f"The LoRA name '{name}' looks like a path; name a LoRA from the library, e.g. <lora:name:0.8>.", field="prompt")
        return self.library.get(name, kind="lora")

    def _refiner(self, recipe: Recipe, pipe: Any) -> tuple[Any, Prompts] | None:
        if pipe is None:
            return None
        # LoRAs are trained for the base model, so the refiner gets the prompts without them.
        prompt, negative = extract_loras(recipe.prompt)[0], extract_loras(recipe.negative_prompt)[0]
        encoder = self._encoder_for(pipe, recipe.clip_skip, weights_changed=False)
        return pipe, Prompts(encoder, prompt, negative, zero_empty_negative=zeros_for_empty(pipe, negative))

    def _apply_loras(self, pipe: Any, loras: list, model_name: str) -> bool:
        """Activate exactly these LoRAs at these weights; True when that changed the model's weights."""
        loaded: dict[str, str] = pipe.__dict__.setdefault("_localdiffusion_loras", {})
        names, weights = [], []
        for ref in loras:
            info = self._lora(ref.name)
            adapter = loaded.get(str(info.path))
            if adapter is None:
                adapter = f"lora_{len(loaded)}"
                load_lora(pipe, info.path, adapter, model_name)
                loaded[str(info.path)] = adapter
            names.append(adapter)
            weights.append(ref.weight)
        state = tuple(zip(names, weights))
        if state == pipe.__dict__.get("_localdiffusion_lora_state", ()):
            return False
        pipe.__dict__["_localdiffusion_lora_state"] = state
        if state:
            pipe.enable_lora()
            pipe.set_adapters(names, adapter_weights=weights)
        else:
            pipe.disable_lora()
        return True

    # --- one batch ---

    def _run(self, run: Run) -> list[Image.Image]:
        recipe, inputs = run.plan.recipe, run.plan.inputs
        shape = (1, 4, recipe.height // 8, recipe.width // 8)
        run.generators = [generator_for(s, recipe.rng, self.device) for s in run.seeds]
        noise = self._noise(run, shape)
        if inputs is None:
            latents = self._sample(run, noise, recipe.steps, recipe.width, recipe.height)
            if recipe.enable_hr:
                return self._hires(run, latents)
            return self.decode(run.pipe, latents)
        image_latents = self._encode(run.pipe, inputs.image, len(run.seeds))
        inpaint = self._inpaint_latents(run, inputs, image_latents, noise) if inputs.mask is not None else None
        latents = self._sample(run, noise, recipe.steps, recipe.width, recipe.height, image_latents, recipe.denoising_strength, inpaint)
        return [self._finish(image, inputs) for image in self.decode(run.pipe, latents)]

    def _noise(self, run: Run, shape: tuple[int, ...]) -> torch.Tensor:
        recipe = run.plan.recipe
        batch = [
            image_noise(g, shape, sub, recipe.subseed_strength, recipe.rng, self.device)
            for g, sub in zip(run.generators, run.subseeds)
        ]
        return torch.cat(batch).to(self.device, run.pipe.unet.dtype)

    def _sample(
        self, run: Run, noise: torch.Tensor, steps: int, width: int, height: int,
        image_latents: torch.Tensor | None = None, strength: float = 1.0, inpaint: InpaintLatents | None = None,
    ) -> torch.Tensor:
        recipe, pipe = run.plan.recipe, run.pipe
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
            if run.references and owner is pipe:  # the refiner has no IP-Adapter
                conditioning = reference.with_image_embeds(conditioning, run.references, len(run.seeds), recipe.cfg_scale > 1.0,
                                                           pipe.unet.dtype)
            latents = denoise(
                owner.unet, scheduler, latents, part, _shifted(conditioning, offset), recipe.cfg_scale,
                extra_step_kwargs=extra, inpaint=inpaint, on_step=_shifted_hook(run.on_step, offset, len(timesteps)),
                cancel=run.cancel, control=control if owner is pipe else None,  # the refiner has no ControlNet
            )
        return latents

    def _control(self, run: Run, width: int, height: int, total: int) -> Control | None:
        inputs = run.plan.inputs
        crop = inputs.crop if inputs is not None else None
        full_size = inputs.original.size if crop is not None and inputs.original is not None else None
        return prepare_control(run.controls, width, height, len(run.seeds), run.plan.recipe.cfg_scale > 1.0,
                               self.device, total, crop=crop, full_size=full_size)

    def _segments(self, run: Run, scheduler: Any, timesteps: torch.Tensor) -> list[tuple[Any, Prompts, torch.Tensor, int]]:
        """Which model denoises which timesteps: the base, then the SDXL refiner from `refiner_switch_at`."""
        if run.refiner is None:
            return [(run.pipe, run.encoder, timesteps, 0)]
        skipped = len(scheduler.timesteps) - len(timesteps)
        switch = min(max(int(len(scheduler.timesteps) * run.plan.recipe.refiner_switch_at) - skipped, 0), len(timesteps))
        refiner, prompts = run.refiner
        return [(run.pipe, run.encoder, timesteps[:switch], 0), (refiner, prompts, timesteps[switch:], switch)]

    def _inpaint_latents(self, run: Run, inputs: ModeImages, image_latents: torch.Tensor, noise: torch.Tensor) -> InpaintLatents:
        pipe = run.pipe
        h, w = image_latents.shape[-2:]
        mask = torch.from_numpy(_mask_array(inputs.mask)).to(self.device, image_latents.dtype)[None, None]
        latent_mask = F.interpolate(mask, size=(h, w))
        batch = image_latents.shape[0]
        if pipe.unet.config.in_channels == 9:
            binary = (mask >= 0.5).to(mask.dtype)
            masked = self._pixels(inputs.image).to(self.device, image_latents.dtype) * (binary < 0.5)
            masked_latents = self._encode_tensor(pipe, masked).repeat(batch, 1, 1, 1)
            return InpaintLatents(latent_mask.repeat(batch, 1, 1, 1), image_latents, noise, masked_latents)
        return InpaintLatents((latent_mask >= 0.5).to(mask.dtype).repeat(batch, 1, 1, 1), image_latents, noise)

    def _hires(self, run: Run, latents: torch.Tensor) -> list[Image.Image]:
        recipe, pipe = run.plan.recipe, run.pipe
        width, height = hires_size(recipe)
        if recipe.hr_upscaler in LATENT_UPSCALERS:
            mode = LATENT_UPSCALERS[recipe.hr_upscaler]
            latents = F.interpolate(latents, size=(height // 8, width // 8), mode=mode.removesuffix("-aa"),
                                    antialias=mode.endswith("-aa"))
        elif recipe.hr_upscaler in IMAGE_UPSCALERS:
            resample = IMAGE_UPSCALERS[recipe.hr_upscaler] or Image.Resampling.LANCZOS
            images = [i.resize((width, height), resample) for i in self.decode(pipe, latents)]
            latents = torch.cat([self._encode(pipe, i, 1) for i in images])
        else:  # an upscaler model (ESRGAN and kin), as A1111's hires fix offers them
            images = [resize(i, recipe.hr_upscaler, (width, height), self.library, self.device, self.dtype, run.cancel)
                      for i in self.decode(pipe, latents)]
            latents = torch.cat([self._encode(pipe, i, 1) for i in images])
        if run.on_step is not None:
            run.on_step.phase = "hires"
        run.generators = [generator_for(s, recipe.rng, self.device) for s in run.seeds]
        noise = self._noise(run, (1, 4, height // 8, width // 8))
        steps = recipe.hr_second_pass_steps or recipe.steps
        latents = self._sample(run, noise, steps, width, height, latents, recipe.denoising_strength)
        return self.decode(pipe, latents)

    # --- pixels and latents ---

    def _pixels(self, image: Image.Image) -> torch.Tensor:
        import numpy as np

        array = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
        return torch.from_numpy(array).permute(2, 0, 1)[None]

    def _encode(self, pipe: Any, image: Image.Image, batch: int) -> torch.Tensor:
        pixels = self._pixels(image).to(self.device, pipe.vae.dtype)
        return self._encode_tensor(pipe, pixels).repeat(batch, 1, 1, 1)

    def _encode_tensor(self, pipe: Any, pixels: torch.Tensor) -> torch.Tensor:
        with _upcast_vae(pipe):
            latents = pipe.vae.encode(pixels.to(pipe.vae.dtype)).latent_dist.mode()
        return (latents * pipe.vae.config.scaling_factor).to(pipe.unet.dtype)

    def decode(self, pipe: Any, latents: torch.Tensor) -> list[Image.Image]:
        """Latents to images with the pipeline's VAE (scaling factor, fp16 upcast where needed)."""
        with _upcast_vae(pipe):
            image = pipe.vae.decode(latents.to(pipe.vae.dtype) / pipe.vae.config.scaling_factor, return_dict=False)[0]
        return pipe.image_processor.postprocess(image, output_type="pil", do_denormalize=[True] * image.shape[0])

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


def _recording(attention: AttentionRecorder, on_step: Callable[[StepState, str, int], None] | None) -> Callable[[StepState, str, int], None]:
    """Tell the attention recorder when a step ends, then whoever else watches the steps."""
    def watch(state: StepState, phase: str, batch: int) -> None:
        attention.after_step(state)
        if on_step is not None:
            on_step(state, phase, batch)

    return watch


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


def _mask_array(mask: Image.Image):
    import numpy as np

    return np.asarray(mask.convert("L"), dtype=np.float32) / 255.0


class _upcast_vae:
    """SDXL's VAE overflows in fp16; run it in fp32 when its config asks for that."""

    def __init__(self, pipe: Any) -> None:
        self.vae = pipe.vae
        self.upcast = self.vae.dtype == torch.float16 and getattr(self.vae.config, "force_upcast", False)

    def __enter__(self) -> None:
        if self.upcast:
            self.vae.to(torch.float32)

    def __exit__(self, *exc: object) -> None:
        if self.upcast:
            self.vae.to(torch.float16)
