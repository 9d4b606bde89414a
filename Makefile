# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# llama-cpp-python ships as source: scripts/install_llama.py compiles llama.cpp for this CPU once
# (~5 min on 2 cores) and keeps the wheel keyed by every build flag (docs/cpu.md)
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

# A second llama.cpp build for the baseline x86-64-v3 target (AVX2, FMA, F16C, BMI2; no AVX-512, no AMX): its kernels
# compute slightly different numbers than a native build on an AVX-512 or AMX machine, so the tests that assert model
# text run against both, whatever machine CI lands on (issue 22, docs/cpu.md). Its own venv, its own cached wheel.
V3_VENV       ?= .venv-x86-64-v3
V3_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
                 -DGGML_BMI2=ON -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF

# The LiteLLM proxy the fleet tests put in front of replicas (docs/scale.md): a router people run beside sentiric,
# in its own venv, since its proxy extra pins its own uvicorn, fastapi and rich
LITELLM_VENV ?= .venv-litellm
LITELLM_PIN  := litellm[proxy]==1.108.0

.PHONY: install litellm demo test test-v3 bench lint docs clean

install: $(VENV)/.installed

# llama-cpp-python built for this CPU by our script (pip's wheel cache ignores build flags; docs/cpu.md), after the
# rest: the script's check of the AMX kernels loads a probe model (gguf, numpy)
$(VENV)/.installed: pyproject.toml scripts/install_llama.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[model,dev,bench]'
	$(BIN)/python scripts/install_llama.py
	$(BIN)/pip install -q -e '.[llama,model,dev,bench]'
	# bytecode now, as a regular pip install writes it: an editable install leaves it to the first run, which
	# cannot write it where PYTHONDONTWRITEBYTECODE is set, and then every `plan` compiles sentiric again (~30 ms)
	$(BIN)/python -m compileall -q sentiric_cli
	touch $@

litellm: $(LITELLM_VENV)/.installed

$(LITELLM_VENV)/.installed: Makefile
	$(PYTHON) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/pip install -q "$(LITELLM_PIN)"
	touch $@

demo: install
	$(BIN)/sentiric plan

test: install litellm
	$(BIN)/python -m pytest -q

# the tests that assert what the model writes (marker `text`), against the x86-64-v3 build
test-v3:
	@grep -qw avx2 /proc/cpuinfo || { echo "test-v3: this CPU has no AVX2: an x86-64-v3 build cannot run here, skipped"; exit 0; }; \
	CMAKE_ARGS="$(V3_CMAKE_ARGS)" $(MAKE) install VENV=$(V3_VENV) && \
	$(V3_VENV)/bin/python -m pytest -q -m text

# each script appends its run to bench/results/NAME.jsonl (every run kept); report.py then writes docs/benchmarks.md
# anew from the newest of each (bench/report.py); the narrative of earlier runs is docs/benchmarks-history.md
bench: install litellm
	$(BIN)/python bench/plan_bench.py
	$(BIN)/python bench/plan_speed_bench.py
	$(BIN)/python bench/gpu_plan_bench.py
	$(BIN)/python bench/run_bench.py
	$(BIN)/python bench/longdoc_eval.py --half test --record
	$(BIN)/python bench/longdoc_bench.py
	$(BIN)/python bench/serve_bench.py
	$(BIN)/python bench/soak_bench.py
	$(BIN)/python bench/overhead_bench.py
	$(BIN)/python bench/shadow_model.py build/shadow-q06.gguf --shape qwen3-0.6b
	$(BIN)/python bench/overhead_bench.py --model build/shadow-q06.gguf --clients 1,4 --name qwen3_shape
	$(BIN)/python bench/serve_speed_bench.py
	$(BIN)/python bench/slot_steps.py
	$(BIN)/python bench/padding_bench.py
	$(BIN)/python bench/sampling_bench.py
	$(BIN)/python bench/fleet_bench.py
	$(BIN)/python bench/report.py

lint: install
	$(BIN)/ruff check sentiric_cli tests bench docs scripts
	$(BIN)/mypy sentiric_cli

docs: install
	$(BIN)/python docs/gen_settings.py

clean:
	rm -rf $(VENV) $(V3_VENV) $(LITELLM_VENV) .pytest_cache build *.egg-info
