"""Engine layer: Recipe -> generate() -> Result.

    from localdiffusion.engine import Engine
    engine = Engine(library)
    result = engine.generate(Recipe(prompt="a lighthouse at dusk", steps=20))
"""

from localdiffusion.engine.generate import Engine, EngineOptions, Progress

__all__ = ["Engine", "EngineOptions", "Progress"]
