"""What a user reads: records, model cards, the catalog, the static web page, plots and the plan
report.
"""
