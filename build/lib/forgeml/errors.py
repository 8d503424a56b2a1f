"""The one exception type users see without a traceback: it says what is wrong and what to do."""


class ForgeError(Exception):
    """Bad input or configuration, detected before (or instead of) doing damage."""
