"""The one exception type that the CLI turns into a one-line message and exit code 1."""


class UserError(Exception):
    """A problem with the user's input (file, layer, limit) rather than a bug in danet-deploy."""
