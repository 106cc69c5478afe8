"""What every room leans on: atomic writes, locks around transformers, progress lines, polite
stops, redaction, fail points for crash tests.
"""
