# Two commands matter: `make demo` (a whole campaign on this machine) and `make test`.
# Each creates the venvs it needs from the pinned constraints under packaging/.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
AGENT_VENV := .venv-agent
# The same agent with the other TFLite backend (ai-edge-litert): the tests run the ClientApp
# and inference under both (packaging/README.md, "Which TFLite interpreter").
LITERT_VENV := .venv-agent-litert
SHARED_WEIGHTS := ../shared/models/mobilenet_v2_1.00_160_no_top.weights.h5
WEIGHTS ?= $(if $(wildcard $(SHARED_WEIGHTS)),$(abspath $(SHARED_WEIGHTS)),imagenet)
DATA ?=
# Empty: fed-demo then takes the campaign defaults from fedapp's RunSettings (one place).
ROUNDS ?=
EPOCHS ?=
BATCH ?=
SERVE ?=
PYTEST_ARGS ?=
# Two workers: the system test waits on Ansible and systemd most of its time.
TEST_WORKERS ?= 2

.PHONY: demo test venv benchmark lock clean

venv: $(VENV)/.installed $(AGENT_VENV)/.installed $(LITERT_VENV)/.installed

# Coordinator side: TensorFlow lives here and only here.
# The agent package goes in too, for the tests only (its unit tests run in this venv; the
# agent itself always runs from .venv-agent).
$(VENV)/.installed: packaging/constraints-coordinator.txt coordinator/pyproject.toml demo/pyproject.toml fedapp/pyproject.toml agent/pyproject.toml common/pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade "pip<27"
	$(VENV)/bin/pip install -q -c packaging/constraints-coordinator.txt -e common -e "fedapp[tflite-runtime]" -e coordinator -e demo -e agent pytest pytest-xdist matplotlib
	touch $@

# Agent side (what a Pi runs): no TensorFlow, ever.
$(AGENT_VENV)/.installed: packaging/constraints-agent.txt agent/pyproject.toml fedapp/pyproject.toml common/pyproject.toml
	test -x $(AGENT_VENV)/bin/python || $(PYTHON) -m venv $(AGENT_VENV)
	$(AGENT_VENV)/bin/pip install -q --upgrade "pip<27"
	$(AGENT_VENV)/bin/pip install -q -c packaging/constraints-agent.txt -e common -e "fedapp[tflite-runtime]" -e "agent[tflite-runtime]"
	touch $@

$(LITERT_VENV)/.installed: packaging/constraints-agent.txt agent/pyproject.toml fedapp/pyproject.toml common/pyproject.toml
	test -x $(LITERT_VENV)/bin/python || $(PYTHON) -m venv $(LITERT_VENV)
	$(LITERT_VENV)/bin/pip install -q --upgrade "pip<27"
	$(LITERT_VENV)/bin/pip install -q -c packaging/constraints-agent.txt -e common -e "fedapp[litert]" -e "agent[litert]"
	touch $@

demo: venv
	$(VENV)/bin/fed-demo --weights "$(WEIGHTS)" $(if $(DATA),--data "$(DATA)") \
		$(if $(ROUNDS),--rounds $(ROUNDS)) $(if $(EPOCHS),--epochs $(EPOCHS)) $(if $(BATCH),--batch-size $(BATCH)) \
		$(if $(SERVE),--serve)

test: venv
	$(VENV)/bin/python -m pytest tests -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

benchmark: venv
	$(VENV)/bin/python benchmarks/campaign_compute.py --weights "$(WEIGHTS)"

lock: venv
	$(VENV)/bin/pip freeze --exclude-editable > packaging/constraints-coordinator.txt
	{ echo "# Pinned set for the agent venvs (both TFLite backends): no TensorFlow, numpy < 2 (tflite-runtime 2.14). Regenerate: make lock"; \
	  { $(AGENT_VENV)/bin/pip freeze --exclude-editable; $(LITERT_VENV)/bin/pip freeze --exclude-editable; } | sort -fu; \
	} > packaging/constraints-agent.txt

clean:
	rm -rf build test-artifacts
