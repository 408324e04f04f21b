"""fed_demo: a whole federation on one machine, for `make demo` and the integration tests
(never installed on a coordinator or a Pi)."""
