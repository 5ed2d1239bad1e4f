"""The `none` baseline: the model as it is. Every table's first row, and the reference of gap_change_pct and kl."""

from debiaskit import LoadedModel, Method, Touches, hookimpl


class NoIntervention(Method):
    name = "none"
    description = "baseline: the unmodified model"

    def touches(self, lm: LoadedModel) -> Touches:
        return Touches()


@hookimpl
def register_methods(register):
    register(NoIntervention)
