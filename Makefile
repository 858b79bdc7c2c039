# The two commands a new user needs (see README.md):
#   make demo   set up .venv and run the embedded default job
#   make test   set up .venv and run the test suite
.PHONY: setup demo test
setup:
	@bash scripts/setup.sh
demo: setup
	.venv/bin/danet-deploy demo
test: setup
	.venv/bin/python -m pytest tests
