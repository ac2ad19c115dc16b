"""The console commands, one module each (pyproject.toml [project.scripts]): compile, generate,
verify, package; each has `parser()` and `main(argv)`, over the shared helper in compiler/cli.py."""
