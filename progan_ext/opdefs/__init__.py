"""Fake kernels, autograd and autocast rules of the compiled ops (one module per op)."""
