"""Making one variant: its base model as a local folder, the plan of a run, which checks it
carries, and the build from selection to publish.
"""
