# The two commands a user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The torch / torchvision builds that lie on this project's machines' disk (a CUDA build that also
# runs on the CPU). Override on other machines, e.g. `make test TORCH_PINS=`.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast test-gpu lint format bench bench-memory clean mutation

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PINS) -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/detect demo --out runs/demo

# pytest exits 5 when it collected no tests: that is a broken suite, never a pass.
test: $(STAMP)
	@$(BIN)/python -m pytest -q; status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	exit $$status

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# The end-to-end checks on CUDA (tests/gpu/); on a machine without a CUDA device they are skipped.
test-gpu: $(STAMP)
	$(BIN)/python -m pytest -q -m gpu

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Mutation testing of the core modules (not part of `make test`; docs/mutation.md). One module at a
# time against its own test files, in copies under build/mutation/: `make mutation MODULES=boxes`.
MODULES ?=
mutation: $(STAMP)
	$(BIN)/python -c "import mutmut" 2>/dev/null || $(BIN)/python -m pip install --quiet -e '.[mutation]'
	OMP_NUM_THREADS=1 $(BIN)/python tools/mutation.py $(MODULES)

bench: $(STAMP)
	$(BIN)/detect bench --config zf5_bench --svd --json runs/bench.json

# Peak RSS of fc-mode training + SVMs + ridge + evaluation on generated VOC-sized data at 50 and 200
# training images, each in a fresh process (target: < 10% growth, < 4 GiB; README "Memory").
bench-memory: $(STAMP)
	OMP_NUM_THREADS=2 $(BIN)/python tools/bench_memory.py --work runs/bench_memory

clean:
	rm -rf runs/demo .pytest_cache
