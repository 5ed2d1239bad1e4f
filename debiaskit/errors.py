"""The one exception type that library code raises for problems a user can fix."""


class DebiasKitError(Exception):
    """Something the user asked for cannot be done; the message says what was wrong and what is accepted."""
