"""Tokenizers over the kept ids: the vocabulary a tokenizer.json holds, its rebuild with new
contiguous ids, chat templates, and every token id a config carries.
"""
