"""Methods that fail on purpose, to check that a failure is contained."""

from contextlib import contextmanager

from debiaskit import Intervention, Method, hooked, hookimpl


class FailsInFit(Method):
    name = "fails-in-fit"
    description = "raises in fit"

    def fit(self, context):
        raise ValueError("fit exploded")


class FailsInApply(Method):
    name = "fails-in-apply"
    description = "installs a hook, then raises while applied"

    @contextmanager
    def apply(self, lm):
        def scramble(resid, hook):
            return resid * 0

        with hooked(lm, [("blocks.0.hook_resid_post", scramble)]):
            raise RuntimeError("apply exploded")
            yield Intervention()


@hookimpl
def register_methods(register):
    register(FailsInFit)
    register(FailsInApply)
