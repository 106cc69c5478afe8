"""Which token ids a trimmed model keeps: the policy over counts, the size multiple, and what is
kept whatever the counts say (specials, the character backstop, keep texts).
"""
