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


class LeaksAHook(Method):
    name = "leaks-a-hook"
    description = "adds a hook directly (not through `hooked`), then raises: the host must remove it"

    @contextmanager
    def apply(self, lm):
        lm.model.add_hook("blocks.0.hook_resid_post", lambda resid, hook: resid * 0)
        raise RuntimeError("left a hook behind")
        yield Intervention()


@hookimpl
def register_methods(register):
    register(FailsInFit)
    register(FailsInApply)
    register(LeaksAHook)
