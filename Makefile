# The two commands a new user needs (see README.md):
#   make demo   set up .venv (the core) and .venv/lava-runtime (Lava), run the embedded default job
#   make test   set them up and run the test suite: the core's part on the core's Python, then
#               the part that imports Lava or lava-dl, in the Lava runtime
#               (scripts/test.sh; `MARK="not slow" bash scripts/test.sh` runs the fast layer)
#   make lint   the formatter's and the linter's checks (ruff, configured in pyproject.toml);
#               `.venv/bin/ruff format .` formats
.PHONY: setup demo test lint
setup:
	@bash scripts/setup.sh
demo: setup
	.venv/bin/danet-deploy demo
test: setup
	@bash scripts/test.sh
lint: setup
	.venv/bin/ruff format --check .
	.venv/bin/ruff check .
