"""Finishing: upscalers (resampling and spandrel models), SD upscale and mask tools.

Features on top of the engine; none has torch plumbing beyond running an upscaler model.
"""
