"""Errors a handler raises; the plugin server turns them into HTTP status + {"Err": ...}."""


class PluginError(Exception):
    """A request that could not be carried out; the message is shown to the Docker user."""

    status = 500


class BadRequest(PluginError):
    """The request itself is invalid (malformed, wrong type, out of range). Nothing changed."""

    status = 400
