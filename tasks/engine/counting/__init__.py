"""Token frequencies: text streamed through the model's own tokenizer, directly or through
distinct-chunk counts.
"""
