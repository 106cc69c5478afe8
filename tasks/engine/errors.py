"""Error classes a user can act on: each message names the file or entry and what to do."""


class TrimworksError(Exception):
    """Base class for every error trimworks raises on purpose."""


class ModelFolderError(TrimworksError):
    """The base model folder is missing something, is unsafe, or is corrupt."""


class UnsupportedTokenizerError(TrimworksError):
    """The tokenizer uses a model type or layout the engine cannot rebuild exactly."""


class CountsMismatchError(TrimworksError):
    """A counts table was made with another tokenizer than the model's."""


class DroppedSpecialTokenError(TrimworksError):
    """A special token id that the model config relies on is not in the kept set."""


class OutputExistsError(TrimworksError):
    """The output folder exists and overwriting was not requested."""


class OutputError(TrimworksError):
    """Writing the output failed (e.g. the disk is full); nothing partial was left."""


class SelectionError(TrimworksError):
    """The selection policy cannot be satisfied (e.g. top_k below the always-kept tokens)."""


class CorpusError(TrimworksError):
    """A corpus file is unreadable, empty or not valid UTF-8."""


class ExactnessError(TrimworksError):
    """A covered line tokenized differently after trimming: a bug, never expected."""


class ManifestError(TrimworksError):
    """The manifest is invalid: the message names the file and entry path."""


class PublishError(TrimworksError):
    """Publishing a variant failed after retries."""
