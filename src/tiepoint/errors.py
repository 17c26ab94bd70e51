"""One exception family per kind of bad input; messages are one line naming the file or key."""


class TiepointError(Exception):
    """Base of all errors the CLI prints as one line (no traceback unless --debug)."""


class ImageError(TiepointError):
    pass


class WeightsError(TiepointError):
    pass


class ConfigError(TiepointError):
    pass


class DatasetError(TiepointError):
    pass


class EstimatorError(TiepointError):
    pass


class VideoError(TiepointError):
    pass
