"""Engine layer: Recipe -> generate() -> Result.

    from localdiffusion.engine import Engine
    engine = Engine(library)
    result = engine.generate(Recipe(prompt="a lighthouse at dusk", steps=20), RunHooks(on_progress=print))
"""

from localdiffusion.engine.generate import Engine, EngineOptions, Progress, RunHooks

__all__ = ["Engine", "EngineOptions", "Progress", "RunHooks"]
