"""Train your own: a LoRA or a textual-inversion embedding from a folder of one's own pictures.

`dataset.py` reads and checks a dataset folder (pictures with same-named `.txt` captions, kohya's
convention); `settings.py` holds the settings and their plain-language help; `base.py` loads the base
checkpoint for training through the library's own loader; `loop.py` is the training loop (progress, cancel,
checkpoints and resume); `lora.py` and `embedding.py` train and save the two kinds of result; `kohya.py`
writes a LoRA in the kohya layout that A1111, Forge and ComfyUI load.

This is the one feature package with torch plumbing of its own (the training loop); it does not depend on the
job queue: a job kind calls `train_lora` / `train_embedding` with its own progress and cancel callables and an
output folder that survives a restart.
"""
