"""The one exception type users see without a traceback: it says what is wrong and what to do;
and forgeml's exit codes, one meaning each across every command (the docs' commands page lists
them), so scripts and CI can branch on them."""

EXIT_OK = 0
# a check said no: the promotion gate refused (`gate`, `deploy`), `doctor` found something missing
EXIT_REFUSED = 1
# bad usage, configuration or input: the message names what to change
EXIT_USAGE = 2
# `monitor`: drift or decay found; `replay`: the candidate is refused
EXIT_DRIFT = 3
# `monitor`, `replay`: too few rows to judge
EXIT_INSUFFICIENT_DATA = 4


class ForgeError(Exception):
    """Bad input or configuration, detected before (or instead of) doing damage."""

    exit_code = EXIT_USAGE


class Refused(ForgeError):
    """A check that said no (the promotion gate): the input was fine, the answer is no."""

    exit_code = EXIT_REFUSED
