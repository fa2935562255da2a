"""Errors a user can fix: the CLI prints them as one line, with no traceback."""


class InputError(Exception):
    """Bad input: the message names the file, the record or line, what is wrong and what to do."""

    def __init__(self, path, problem: str, where: str | None = None, hint: str | None = None):
        self.path, self.problem, self.where, self.hint = str(path), problem, where, hint
        parts = [self.path]
        if where:
            parts.append(where)
        message = ": ".join(parts) + f": {problem}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)
