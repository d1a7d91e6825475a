"""Models layer: the library (scan, detect, hash), loading (diffusers folder, single file) and the cache."""
