# The two commands of the README: `make demo` and `make test`. Both set up .venv first;
# `make test` also installs the Debian packages the tests use (as root; otherwise it says how).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Commands the tests run, each from the Debian package of the same name: espeak-ng speaks test
# phrases, ffmpeg cross-checks our mp4s, chromium runs the demo page.
TEST_COMMANDS := espeak-ng ffmpeg chromium

.PHONY: demo test setup system-packages clean

setup: $(STAMP)

# The lock pins torch's CPU build (torch==2.13.0+cpu); the check after it makes sure no CUDA
# build slipped in through another route.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/python -c "import sys, torch; sys.exit(torch.version.cuda and 'a CUDA build of torch is installed; requirements.lock pins the CPU build')"
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

system-packages:
	@missing=""; for c in $(TEST_COMMANDS); do command -v $$c >/dev/null || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages for the tests:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "the tests need$$missing; install them with: sudo apt-get install -y$$missing" >&2; exit 1; \
	  fi; \
	fi

demo: $(STAMP)
	$(BIN)/lipstream demo

test: $(STAMP) system-packages
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) out
