"""The one exception the data layer raises for bad user data."""


class SceneError(ValueError):
    """A scene on disk (or in a shard) cannot be used as it is.

    The message is one sentence saying what is wrong, where, and how to fix it; it is raised instead
    of letting a low-level library error (PIL, json, numpy) escape with its traceback.
    """
