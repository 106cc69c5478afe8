"""Checkpoints as streams of tensors: reading and writing safetensors, which tensors are
vocabulary-sized (architecture data), slicing their rows, and checks that a folder is whole and safe.
"""
