# The two commands: `make run` (the daemon) and `make test` (everything the tests need, then the tests).
CONFIG ?= config/assistant.toml
PYTEST_ARGS ?=

.PHONY: run test lint bench setup clean

run: setup $(CONFIG)
	.venv/bin/assistant run --config $(CONFIG)

setup:
	@scripts/setup.sh

config/assistant.toml:
	cp config/assistant.example.toml $@
	@echo "created $@ from the example: edit it (broker, entities) and set OPENAI_API_KEY"

test:
	@scripts/setup.sh --test
	.venv/bin/python scripts/check_wheels.py
	.venv/bin/python -m pytest $(PYTEST_ARGS)
	.venv/bin/ruff check assistant tests bench
	.venv/bin/mypy assistant

lint:
	.venv/bin/ruff check assistant tests bench
	.venv/bin/ruff format --check assistant tests bench
	.venv/bin/mypy assistant

bench:
	@scripts/setup.sh --test
	.venv/bin/python bench/latency.py
	.venv/bin/python bench/idle.py
	.venv/bin/python bench/privacy.py
	.venv/bin/python bench/soak.py
	.venv/bin/python bench/prompt_tokens.py
	.venv/bin/python bench/piper_voice.py
	.venv/bin/python bench/command_latency.py
	.venv/bin/python bench/side_by_side.py

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache *.egg-info
