"""The `debiaskit` commands, one module each; `support` holds what they share."""
