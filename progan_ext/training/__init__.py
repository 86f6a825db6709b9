"""The progressive trainer behind ``python -m progan_ext.train``, read in this order:

``config`` (flags, presets, validation) -> ``schedule`` (resolution, phase, alpha, batch, lr at any
image count) -> ``loop`` (data, networks, D step, G step, EMA, snapshots) with ``checkpoint``
(atomic save / resume), ``outputs`` (run dir, JSONL/TensorBoard log, image grids) and
``distributed`` (torchrun process group, gradient averaging).
"""
