"""The one error family for user-facing failures; `cli.main` turns each into one red line and exit code 1."""


class Mark1Error(Exception):
    """A problem the user can fix: the message says what is wrong, where, and what to do."""


class ConfigError(Mark1Error):
    """A config file, key or value that cannot be used."""


class VideoError(Mark1Error):
    """A video that cannot be read or decoded."""


class CacheError(Mark1Error):
    """A feature cache that is missing, damaged, locked, or built with another config."""


class AnnotationError(Mark1Error):
    """An annotation file or row that cannot be used."""


class TrainingError(Mark1Error):
    """A run that cannot learn from its data (most steps gave a NaN or infinite loss)."""


class CheckpointError(Mark1Error):
    """A checkpoint that is missing, damaged, or made for other backbones or another cache."""


class HubError(Mark1Error):
    """A push to the Hugging Face Hub that cannot be made (offline, no token, no write access)."""
