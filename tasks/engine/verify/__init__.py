"""Evidence that a trimmed model is exact: the streamed structural proof, and the comparison of
tokenizations and outputs with the base.
"""
