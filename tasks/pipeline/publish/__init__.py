"""Publishing targets: the local registry folder and the Hugging Face Hub.
"""
