"""Errors a user can act on.

Anything that is wrong with what the user gave us (a path, a file, a flag, a
topic) raises InputError with a message that names the input and the problem.
The CLI prints that message on one line and exits with code 2; nothing deep
inside torch or a decoder library should reach the user as a traceback.
"""


class InputError(Exception):
    """Bad user input: a missing or corrupt file, an unknown name, a wrong model type."""


EXIT_INPUT_ERROR = 2
