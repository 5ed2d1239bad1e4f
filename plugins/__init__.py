"""debiaskit's built-in plugins, one module per debiasing method or data source (installed as debiaskit.plugins)."""
