# The README's two commands: `make demo` (the main job on the embedded default) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
SYSTEM_TOOLS := ffmpeg rtsp-server-perl prometheus

.PHONY: setup system-deps demo test clean

setup: $(VENV)/.installed

# torch is pinned and installed first: an unpinned torch pulls several GB of CUDA packages.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $@

# Real parts the integration tests talk to (ffmpeg pushes RTSP, rtsp-server-perl serves it, prometheus scrapes).
system-deps:
	@missing=""; for t in $(SYSTEM_TOOLS); do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_TOOLS); fi

demo: setup
	$(VENV)/bin/hyperseg-stream demo

test: setup system-deps
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) out .pytest_cache
