# The two commands a new user needs (see README.md):
#   make demo   set up .venv (the core) and .venv/lava-runtime (Lava), run the embedded default job
#   make test   set them up and run the test suite: the core's part on the core's Python, the
#               part that imports Lava or lava-dl in the test process in the Lava runtime
.PHONY: setup demo test
setup:
	@bash scripts/setup.sh
demo: setup
	.venv/bin/danet-deploy demo
test: setup
	.venv/bin/python -m pytest tests -m "not lava_runtime"
	.venv/bin/danet-deploy lava-runtime run pytest tests -m lava_runtime
