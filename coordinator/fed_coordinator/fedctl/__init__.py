"""fedctl: the operator command line, one module per group of actions."""
