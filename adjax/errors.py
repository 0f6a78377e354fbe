"""The one exception type for bad user input.

`adjax.main` turns an `InputError` into a single line on stderr and exit code 2 (no traceback). Raise it
for anything the user can fix: a missing directory, a bad dataset layout, a corrupt image, a bad config
value. Its message names the file or key and says what is wrong.
"""


class InputError(ValueError):
  """Bad user input: a file, directory or config value the user must fix."""
