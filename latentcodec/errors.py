"""Exception types. The CLI turns every LatentCodecError into a one-line message and exit code 1."""


class LatentCodecError(Exception):
    """Base class for every error a user can cause with bad input or files."""


class InputError(LatentCodecError):
    """An input file is missing, unreadable or not an image/video."""


class BitstreamError(LatentCodecError):
    """A compressed file is corrupt, truncated, of an unknown version or for another model."""


class WeightsError(LatentCodecError):
    """Weights are missing, or do not belong to the requested model/config."""


class ConfigError(LatentCodecError):
    """A configuration is malformed (unknown key, wrong type, invalid value)."""
