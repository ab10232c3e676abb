"""One exception hierarchy. Every message says what is wrong, where, and what to do."""


class EdgeSNNError(Exception):
    """Base class of every error edgesnn raises on purpose."""


class ModelError(EdgeSNNError, ValueError):
    """A network description that cannot run: bad shapes, parameters out of range."""


class ModelFileError(EdgeSNNError):
    """A model file that is truncated, corrupted, of another version or inconsistent."""


class InputError(EdgeSNNError, ValueError):
    """Input events or data that do not fit the network."""
