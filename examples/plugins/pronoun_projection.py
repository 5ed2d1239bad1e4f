"""A complete debiaskit plugin in one file: project the she-vs-he readout direction out of the residual stream."""

from contextlib import contextmanager

from debiaskit import Intervention, Method, Option, Touches, hooked, hookimpl


class PronounProjection(Method):
    name = "pronoun-projection"
    description = "remove the direction the model reads ' she' vs ' he' from at one layer"
    options = (Option("layer", int, 20, "residual stream after this block (blocks.L.hook_resid_post)"),)
    strength_knob = "layer"

    def fit(self, context):
        lm = context.model
        she, he = (lm.tokenizer(word, add_special_tokens=False)["input_ids"][0] for word in (" she", " he"))
        # the final RMSNorm scales each dimension before the unembedding, so fold its weight in
        direction = lm.model.ln_final.w * (lm.model.W_U[:, she] - lm.model.W_U[:, he])
        self.direction = (direction / direction.norm()).detach()

    @contextmanager
    def apply(self, lm):
        def project_out(resid, hook):  # resid: [batch, pos, d_model]
            along = (resid @ self.direction).unsqueeze(-1) * self.direction
            return resid - along * lm.editable_mask(resid)  # never the anchor token or padding

        with hooked(lm, [(f"blocks.{self.settings['layer']}.hook_resid_post", project_out)]):
            yield Intervention()

    def touches(self, lm):  # what apply hooks: the host starts the forward at this block (docs/plugins.md)
        return Touches(hook_points=(f"blocks.{self.settings['layer']}.hook_resid_post",))


@hookimpl
def register_methods(register):
    register(PronounProjection)
