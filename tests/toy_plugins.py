"""Plug-ins defined outside the package, as a user would write them: a toy SSL objective (APC
that predicts the next frame, n = 1, under a new name and family row)."""

from speechmi_jax.ssl import models, registry

TOY_OBJECTIVE = registry.register(registry.Objective(
    name="toy_next_frame", family="APC", views="frames <= t -> frame t+1",
    z_target="input log-mel frame", p_psi="Gaussian on the residual", h_target="Gaussian entropy",
    build=lambda config, backbone, ctx: models.APCTask(backbone.arch, name="toy_next_frame"),
    causal=True))
