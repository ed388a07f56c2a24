# DogVision: every target calls `python -m dogvision <command>`; `make help` lists them.
# Variables given on the command line (make train FULL=1 NUM_IMAGES=500) become options.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  ?= $(VENV)/.installed
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL ?= 2

DATA_DIR ?= data/dog-breed-identification
RUNS_DIR ?= runs

# Config variables passed through when set: NAME=value -> --NAME value.
CONFIG_VARS := FULL NUM_IMAGES BATCH_SIZE NUM_EPOCHS PATIENCE LEARNING_RATE MODEL_HANDLE IMAGE_SIZE \
  SEED KAGGLE_ZIP DATA_DIR RUNS_DIR CACHE_DIR BACKBONES_DIR SUBMISSIONS_DIR FINE_TUNE FINE_TUNE_LAYERS \
  FINE_TUNE_LEARNING_RATE HEAD_LEARNING_RATE HEAD_BATCH_SIZE CACHE_FEATURES BACKBONE_RUNTIME TTA CALIBRATE L2 DROPOUT VAL_FRACTION NUM_BREEDS RUN RESUME FORCE
ARGS := $(foreach v,$(CONFIG_VARS),$(if $($(v)),--$(v) "$($(v))"))

# The run `make submission` uses; training happens only when there is none yet.
LATEST := $(RUNS_DIR)/$(if $(filter 1 true yes,$(FULL)),LATEST_FULL,LATEST)
TRAINED := $(if $(RUN),,$(LATEST))

.DEFAULT_GOAL := help
.PHONY: help setup data show train submission validate submit runs tensorboard test bench \
  evaluate predict kaggle-train clean-venv

help: ## list targets and variables
	@echo "Usage: make <target> [VARIABLE=value ...]"
	@echo
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | awk -F'\t' '{printf "  %-14s %s\n", $$1, $$2}'
	@echo
	@echo "Variables (defaults in dogvision/config.py):"
	@echo "  FULL=1             train on every labeled photo (default: NUM_IMAGES subset, 80/20 split)"
	@echo "  NUM_IMAGES=1000    subset size without FULL"
	@echo "  BATCH_SIZE=32      NUM_EPOCHS=100  PATIENCE=3  LEARNING_RATE=0.001  SEED=42"
	@echo "  MODEL_HANDLE=url|folder   TF Hub / Kaggle Models URL or local SavedModel (default: MobileNetV2 130_224 feature vector)"
	@echo "  KAGGLE_ZIP=path    use this competition archive instead of downloading it"
	@echo "  TTA=auto|1|0       flip test-time augmentation   CALIBRATE=1  L2=3e-05  DROPOUT=0.2"
	@echo "  HEAD_LEARNING_RATE=0.03  HEAD_BATCH_SIZE=128   the head on cached features (LEARNING_RATE: end to end)"
	@echo "  FINE_TUNE=1        backbone in the graph, top FINE_TUNE_LAYERS=20 layers trainable"
	@echo "  CACHE_FEATURES=0   the course's pipeline: frozen backbone re-run every epoch"
	@echo "  BACKBONE_RUNTIME=auto|tflite|tf   features with TFLite on CPU-only machines (auto), else TensorFlow"
	@echo "  RUN=name           run to use (submission, evaluate, predict) or to create (train)"
	@echo "  RESUME=1           continue an interrupted RUN   FORCE=1  replace an existing run/submission"
	@echo "  CSV=file MESSAGE=text   for submit/validate       PHOTOS='a.jpg dir/'  for predict"
	@echo "  KAGGLE_USERNAME=name    for kaggle-train when your token (not kaggle.json) holds the credentials"
	@echo "  DATA_DIR=$(DATA_DIR)  RUNS_DIR=$(RUNS_DIR)  CACHE_DIR=data/features  SUBMISSIONS_DIR=submissions"

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade pip
	$(VENV)/bin/pip install -r requirements.txt
	touch $@

setup: $(STAMP) ## create .venv with the pinned requirements

$(DATA_DIR)/.verified.json: | $(STAMP)
	$(PY) -m dogvision data $(ARGS)

data: $(STAMP) ## download (or KAGGLE_ZIP=...), unpack and verify the data
	$(PY) -m dogvision data $(ARGS)

show: data ## write runs/batch.png, a 5x5 grid of a training batch
	$(PY) -m dogvision show $(ARGS)

train: $(DATA_DIR)/.verified.json ## train a model into runs/<run>/ (FULL=1 for all photos)
	$(PY) -m dogvision train $(ARGS)

$(LATEST): | $(DATA_DIR)/.verified.json
	$(PY) -m dogvision train $(ARGS)

submission: $(DATA_DIR)/.verified.json $(TRAINED) ## predict test photos into submissions/<run>.csv
	$(PY) -m dogvision submission $(ARGS)

validate: | $(STAMP) ## check a submission: make validate CSV=submissions/x.csv
	$(PY) -m dogvision validate $(CSV) $(ARGS)

submit: | $(STAMP) ## validate, submit to Kaggle and show the public score (CSV=..., MESSAGE=...)
	$(PY) -m dogvision submit $(ARGS) $(if $(CSV),--csv "$(CSV)") $(if $(MESSAGE),--message "$(MESSAGE)")

kaggle-train: | $(STAMP) ## train FULL=1 + submission on Kaggle's GPUs; fetch runs/ and submissions/
	$(PY) -m dogvision kaggle-train $(ARGS)

runs: | $(STAMP) ## list finished runs with their validation metrics
	$(PY) -m dogvision runs $(ARGS)

evaluate: $(DATA_DIR)/.verified.json ## report on the latest run (or RUN=) into runs/<run>/report/
	$(PY) -m dogvision evaluate $(ARGS)

predict: | $(STAMP) ## top-5 breeds of your photos: make predict PHOTOS='dog.jpg folder/' [TOP=3]
	$(PY) -m dogvision predict $(PHOTOS) $(if $(TOP),--top "$(TOP)") $(ARGS)

tensorboard: | $(STAMP) ## TensorBoard over every run's logs
	$(VENV)/bin/tensorboard --logdir $(RUNS_DIR)

bench: $(DATA_DIR)/.verified.json ## time ours vs the course's pipeline on the same photos (writes runs/bench/bench.md)
	$(PY) -m dogvision bench $(ARGS)

test: | $(STAMP) ## run the test suite (offline, no ../shared needed)
	$(PY) -m pytest -q tests

clean-venv: ## remove .venv (data, runs and submissions are kept)
	rm -rf $(VENV)
