"""Fidelity on real text: the vendored UDHR benchmark and the real-text report.
"""
