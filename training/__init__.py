"""Model fitting, export and evaluation for inspectd."""
