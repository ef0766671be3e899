# Visualizing Convnets: train, watch TensorBoard and make filter GIFs in one image.
#
#   docker build -t visualize-convnets .                                  # CUDA GPU host
#   docker build -t visualize-convnets --build-arg TF_TAG=2.21.0 .         # CPU-only host
#
# Base: the official TensorFlow image, by tag, so TensorFlow itself is exactly the
# version requirements.txt pins (the build stops if they differ). We chose it over
# an nvidia/cuda runtime base plus `pip install tensorflow[and-cuda]` because the
# same file then also builds the CPU image (TF_TAG=2.21.0), and the official image
# brings Python 3.11, which numpy 2.4 and scipy 1.17 require. (It is Ubuntu 22.04's
# 3.11.0rc1, tensorflow/tensorflow#82529: the code must not need 3.11.4+ features
# such as tarfile's extraction filters.) Its weak point is
# CUDA: the -gpu images have shipped CUDA/cuDNN libraries that do not match what
# TensorFlow was built against, which hides the GPU. So for a -gpu tag we add
# TensorFlow's own `and-cuda` NVIDIA wheels, pinned in docker/cuda-constraints.txt
# to the CUDA 12.5 / cuDNN 9.3 that TF 2.21 is tested with; TensorFlow finds them
# next to itself in site-packages.
ARG TF_TAG=2.21.0-gpu
FROM tensorflow/tensorflow:${TF_TAG}

ARG TF_TAG
# With --gpus all the NVIDIA runtime mounts the driver's compute libraries only if
# the image asks for them; set here so that holds whatever the base sets.
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /workspace

COPY requirements.txt ./
COPY docker/cuda-constraints.txt /tmp/
# The base's TensorFlow and NVIDIA packages become constraints, so requirements.txt
# adds and pins the rest but can never swap TensorFlow or CUDA for other builds.
RUN tf_version=$(python -c 'import tensorflow as tf; print(tf.__version__)') \
 && pinned=$(sed -nE 's/^tensorflow==([^ ;#]+).*/\1/p' requirements.txt) \
 && { [[ "$tf_version" == "$pinned" ]] \
      || { echo "base image has TensorFlow $tf_version, requirements.txt pins $pinned: pick the matching TF_TAG" >&2; exit 1; }; } \
 && if [[ "$TF_TAG" == *gpu* ]]; then python -m pip install "tensorflow[and-cuda]==$tf_version" -c /tmp/cuda-constraints.txt; fi \
 && python -m pip list --format=freeze \
      | grep -iE '^(tensorflow|tensorflow[-_][a-z0-9_-]+|nvidia[-_][a-z0-9_-]+)==' \
      > /tmp/base-constraints.txt \
 && python -m pip install -r requirements.txt -c /tmp/base-constraints.txt \
 && rm /tmp/base-constraints.txt /tmp/cuda-constraints.txt

# Jupyter for visualizing_convnets.ipynb (compose's notebook service), from its own pinned file, kept to
# requirements.txt's versions of what both name.
COPY requirements-notebook.txt ./
RUN python -m pip install -r requirements-notebook.txt -c requirements.txt

# Files written to mounted folders belong to this uid/gid: build with your own
# (--build-arg USER_UID=$(id -u) --build-arg USER_GID=$(id -g)).
ARG USER_UID=1000
ARG USER_GID=1000
# Declared here, not at the top: changing them reuses the cached pip layers.
# --no-log-init: a large uid would otherwise grow /var/log/faillog to gigabytes.
# --non-unique: some bases already own uid/gid 1000.
RUN groupadd --non-unique --gid "$USER_GID" convnets \
 && useradd --no-log-init --non-unique --uid "$USER_UID" --gid "$USER_GID" \
      --create-home --shell /bin/bash convnets \
 && mkdir -p data logs checkpoints gifs figures \
 && chown "$USER_UID:$USER_GID" data logs checkpoints gifs figures

# Only the project's code: data, logs, checkpoints, GIFs and the demos' figures come in as volumes.
COPY *.py ./
# The notebook, and its folder writable by the user, so Jupyter can save it (inside the container: mount a
# folder, or download it, to keep your edits).
COPY visualizing_convnets.ipynb ./
RUN chown "$USER_UID:$USER_GID" /workspace visualizing_convnets.ipynb

USER ${USER_UID}:${USER_GID}
# New named volumes copy these folders' ownership, so they start writable.
VOLUME ["/workspace/data", "/workspace/logs", "/workspace/checkpoints", "/workspace/gifs", "/workspace/figures"]
# TensorBoard: docker run --init ... tensorboard --logdir /workspace/logs --bind_all
EXPOSE 6006
# Jupyter (docker run --init -p 127.0.0.1:8888:8888 -p 127.0.0.1:6007:6007 ... jupyter lab ..., README: The notebook), and
# the notebook's
# own %tensorboard, which these flags put on all the container's interfaces at 6007, beside 6006.
ENV NOTEBOOK_TENSORBOARD_FLAGS="--bind_all --port 6007"
EXPOSE 8888 6007

# Exec form: python is PID 1 and gets docker stop's SIGTERM itself, and saves
# a checkpoint before it exits. (It sets its handlers first thing: PID 1 ignores
# SIGTERM that has none.)
CMD ["python", "visualize_convnets.py"]
