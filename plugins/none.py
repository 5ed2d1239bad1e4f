"""The `none` baseline: the model as it is. Every table's first row, and the reference of gap_change_pct and kl."""

from debiaskit import Method, hookimpl


class NoIntervention(Method):
    name = "none"
    description = "baseline: the unmodified model"


@hookimpl
def register_methods(register):
    register(NoIntervention)
