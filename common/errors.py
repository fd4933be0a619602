"""Errors a handler raises; the plugin server turns them into HTTP status + {"Err": ...}."""


class PluginError(Exception):
    """A request that could not be carried out; the message is shown to the Docker user."""

    status = 500


class BadRequest(PluginError):
    """The request itself is invalid (malformed, wrong type, out of range). Nothing changed."""

    status = 400


class Busy(PluginError):
    """Not carried out for now: what the request needed was held past its deadline (by a
    call stuck on the disk, say). Nothing changed, and the same request may succeed later."""

    status = 503
