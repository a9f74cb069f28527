"""The one exception type for mistakes a user can fix (bad paths, configs, checkpoints).

Command-line entry points print these as a single `error: ...` line instead of a stack trace.
"""


class UserError(ValueError):
  """Bad input from the user; the message names the problem and the fix."""
