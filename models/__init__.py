"""The MAGVIT library: pure PyTorch models, tasks and decoding.

Never imports service/ or training/; no file or network I/O outside models/checkpoint.py.
"""
