"""What a script tells its user besides its results: one-line errors (UserError) and notes, both on stderr."""
import sys


class UserError(Exception):
    """A mistake the user can fix: a wrong flag, a missing or damaged file, a full disk.

    cli.run() prints it as one line on stderr, `<script>: error: <message>`, and
    exits with code 2; the message names the file or flag and what to do.
    """


def note(message):
    """Something the user should know that is not an error: `note: <message>` on stderr, never among the results
    on stdout."""
    print(f"note: {message}", file=sys.stderr, flush=True)
