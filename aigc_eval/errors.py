"""The one exception type for mistakes a user can fix."""


class UserError(Exception):
    """Bad input (config, file, option). The CLI prints the message and exits 2.

    The message names the file or key at fault and says how to fix it.
    """
