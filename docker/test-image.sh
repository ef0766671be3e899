#!/usr/bin/env bash
# Build the project's Dockerfile unchanged and run the image for real, through
# docker/compose.yaml as users do, on a machine with Docker's engine installed
# but not running, no registry and no GPU:
#
#   start a private dockerd, make or reuse a stand-in for the TensorFlow base,
#   copy the build context and docker/ into a scratch checkout, then there
#   0. docker-compose config reads docker/compose.yaml; compose builds the GPU
#      image with the host uid, docker build the CPU one
#   1. docker-compose up train: a short run on the checkout's folders, its data
#      from the test mirror ($OXFORD_PETS_URL), its GPU reservation passed on
#   2. docker stop a longer run, python as PID 1 (plain docker run), then
#      docker-compose stop one (init: true): exit 143, a newer checkpoint each
#      time, and every next run resumes from it; every host file is the uid's
#   3. docker-compose up -d tensorboard answers on port 6006 from the logs
#   4. docker-compose run --rm gif writes GIFs that decode
#   5. docker-compose up -d notebook serves Jupyter's login page on port 8888;
#      the token in its log opens its API, which holds the notebook, writable
#   then stop the engine (by its pid) and clean up, also on failure.
#
# Needs root, docker.io, docker-compose and debootstrap (apt), and a Python with
# Pillow ($PYTHON, else python3): tests/test_image.py passes the test suite's.
# The engine's data root (images, build cache) and the stand-in are kept under
# $IMAGE_TEST_CACHE so a warm run skips the slow parts.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

die() { echo "test-image: FAIL: $*" >&2; exit 1; }
say() { echo "test-image: $*"; }

python=${PYTHON:-python3}
[[ $(id -u) == 0 ]] || die "needs root to start dockerd"
for tool in dockerd docker docker-compose "$python"; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y docker.io docker-compose debootstrap)"
done
"$python" -c 'import PIL' 2>/dev/null || die "$python cannot import Pillow (pip install -r requirements.txt)"
for code in visualize_convnets.py filter_gif.py; do
    [[ -f $code ]] || die "$code is missing: nothing to test yet"
done

cache=${IMAGE_TEST_CACHE:-/var/cache/visualize-convnets}
mkdir -p "$cache"
# One check at a time: a second engine cannot share the data root.
exec 9> "$cache/.lock"
flock -n 9 || die "another image check holds $cache/.lock"
uid=4242 gid=4343  # not 1000, so the build args, not the defaults, are what is proven
started=$SECONDS
# A short path: the engine's unix sockets live under it (108-byte limit).
tmp=$(mktemp -d /tmp/vc-test.XXXXXX)
export DOCKER_HOST=unix://$tmp/docker.sock
# The classic builder: the Dockerfile needs no BuildKit, and users may not have it.
export DOCKER_BUILDKIT=0
# What compose.yaml reads from the environment: the image's user is the "host" uid.
export HOST_UID=$uid HOST_GID=$gid
dockerd_pid='' mirror_pid='' containers=()
work=$tmp/checkout

compose() {  # docker-compose as a user runs it in their checkout, plus this check's override
    (cd "$work" && docker-compose --ansi never -f docker/compose.yaml -f docker/compose.ci.yaml "$@")
}

cleanup() {
    local status=$?
    set +e
    ((${#containers[@]})) && docker rm -f "${containers[@]}" >/dev/null 2>&1
    [[ -f $work/docker/compose.ci.yaml && -n $dockerd_pid ]] && compose down --timeout 1 >/dev/null 2>&1
    [[ -n $mirror_pid ]] && kill "$mirror_pid" 2>/dev/null && wait "$mirror_pid" 2>/dev/null
    if [[ -n $dockerd_pid ]]; then
        kill "$dockerd_pid" 2>/dev/null
        for _ in $(seq 60); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.5; done
        kill -KILL "$dockerd_pid" 2>/dev/null
        wait "$dockerd_pid" 2>/dev/null
    fi
    # Anything the engine left mounted under its exec root must go before rm.
    grep -o " $tmp/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
    rm -rf "$tmp"
    ((status == 0)) && say "passed in $((SECONDS - started)) s" || echo "test-image: failed after $((SECONDS - started)) s" >&2
}
trap cleanup EXIT
trap 'exit 143' TERM INT  # a stopped check (pytest ending early) still cleans up: exit runs the EXIT trap

# --------------------------------------------------------------------- engine
# CI has no GPU. A stand-in for the NVIDIA Container Toolkit's prestart hook on
# the engine's PATH makes the engine accept GPU requests (it adds the hook to the
# container and sets NVIDIA_VISIBLE_DEVICES); the hook only notes each call. So
# compose.yaml's train service runs unchanged, GPU reservation included, and the
# check sees the reservation reach the engine. (An override file cannot drop it:
# docker-compose 1.29 merges device reservations.)
mkdir -p "$tmp/nvidia"
cat > "$tmp/nvidia/nvidia-container-runtime-hook" <<EOF
#!/bin/sh
cat > /dev/null  # the container's state
echo "\$*" >> "$tmp/nvidia-hook.calls"
EOF
chmod +x "$tmp/nvidia/nvidia-container-runtime-hook"

start_engine() {  # driver -> 0 when the engine answers
    local driver=$1
    [[ -d $cache/docker-$driver ]] || new_root=$cache/docker-$driver
    mkdir -p "$cache/docker-$driver"
    # No default bridge, no iptables rules and no sysctl changes on the host. Compose's
    # own network (tensorboard's published port) is a bridge the engine makes when asked.
    PATH=$tmp/nvidia:$PATH dockerd --data-root "$cache/docker-$driver" --exec-root "$tmp/exec" \
        --pidfile "$tmp/dockerd.pid" -H "$DOCKER_HOST" --storage-driver "$driver" \
        --bridge=none --iptables=false --ip6tables=false --ip-forward=false \
        > "$tmp/dockerd-$driver.log" 2>&1 &
    dockerd_pid=$!
    for _ in $(seq 60); do
        kill -0 "$dockerd_pid" 2>/dev/null || break
        docker version >/dev/null 2>&1 && return 0
        sleep 1
    done
    kill "$dockerd_pid" 2>/dev/null; wait "$dockerd_pid" 2>/dev/null
    dockerd_pid=''
    # A failed start can leave the data root mounted on itself.
    grep -o " $cache/docker-$driver[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
    return 1
}
engine=''
for driver in ${IMAGE_TEST_STORAGE_DRIVERS:-overlay2 fuse-overlayfs vfs}; do
    if start_engine "$driver"; then engine=$driver; break; fi
    say "the engine did not start with $driver: $(grep -m1 -iE 'level=(error|fatal)' "$tmp/dockerd-$driver.log" | cut -c1-300)"
    [[ ${new_root:-} == "$cache/docker-$driver" ]] && rm -rf "$new_root"
done
[[ -n $engine ]] || die "could not start a Docker engine here with any storage driver (${IMAGE_TEST_STORAGE_DRIVERS:-overlay2 fuse-overlayfs vfs}); reasons above"
say "engine up ($engine, data root $cache/docker-$engine) in $((SECONDS - started)) s"

# ----------------------------------------------------------------- checkout
# Compose mounts ../data etc. next to docker/: a scratch checkout keeps the
# repository's own data, logs and checkpoints out of it.
mkdir -p "$work"
cp -r Dockerfile .dockerignore requirements.txt requirements-notebook.txt ./*.py visualizing_convnets.ipynb docker \
    "$work/"
# This engine has no route out of its bridges: training and builds use the host's
# network (the mirror listens on its 127.0.0.1, PyPI is outside). The command is
# compose.yaml's with small settings; $EPOCHS picks a short or an endless run.
cat > "$work/docker/compose.ci.yaml" <<'EOF'
services:
  train:
    network_mode: host
    build:
      network: host
    command: ["python", "visualize_convnets.py", "--image-size", "32", "--batch-size", "10", "--seed", "1",
              "--summary-every", "5", "--snapshot-every", "10", "--checkpoint-every", "100000",
              "--epochs", "${EPOCHS:-2}"]
EOF
mkdir -p "$work"/{data,logs,checkpoints,gifs,figures}
chown "$uid:$gid" "$work"/{data,logs,checkpoints,gifs,figures}

services=$(cd "$work" && docker-compose -f docker/compose.yaml config --services | sort | xargs)
[[ $services == "gif notebook tensorboard train" ]] || die "0. docker-compose config of docker/compose.yaml: services '$services'"
compose config -q || die "0. docker-compose config rejects docker/compose.yaml with the override"
say "0. docker-compose $(docker-compose version --short) config: services $services"

# ------------------------------------------------------------- base and build
tf_tag=$(sed -nE 's/^ARG TF_TAG=([^ ]+)$/\1/p' Dockerfile)
[[ -n $tf_tag ]] || die "no 'ARG TF_TAG=' default in the Dockerfile"
cpu_tag=${tf_tag%-gpu}
t=$SECONDS
docker/build-standin-base.sh "tensorflow/tensorflow:$tf_tag" "tensorflow/tensorflow:$cpu_tag" \
    > "$tmp/standin.log" 2>&1 || { tail -20 "$tmp/standin.log" >&2; die "could not make the stand-in base"; }
grep -q reusing "$tmp/standin.log" && how=reused || how=built
say "stand-in base tensorflow/tensorflow:$tf_tag $how ($((SECONDS - t)) s)"

image=$(cd "$work" && docker-compose -f docker/compose.yaml config | sed -nE 's/^    image: (.+)$/\1/p' | sort -u)
[[ $image == *:* && $image != *$'\n'* ]] || die "0. docker/compose.yaml names no single image for its services: '$image'"
size() { docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%.2f GB", $1/1e9}'; }
t=$SECONDS
# One build: all three services share the image, so building train builds theirs.
compose build train > "$tmp/build-gpu.log" 2>&1 || { tail -30 "$tmp/build-gpu.log" >&2; die "docker-compose build train failed"; }
[[ $(docker image inspect -f '{{.Config.User}}' "$image") == "$uid:$gid" ]] \
    || die "the image compose built does not run as HOST_UID:HOST_GID $uid:$gid"
say "docker-compose build train: $image as $uid:$gid ($(size "$image"), $((SECONDS - t)) s)"
t=$SECONDS
docker build --network host --pull=false --build-arg TF_TAG="$cpu_tag" --build-arg USER_UID=$uid \
    --build-arg USER_GID=$gid -t visualize-convnets:cpu-test . > "$tmp/build-cpu.log" 2>&1 \
    || { tail -30 "$tmp/build-cpu.log" >&2; die "docker build (CPU) failed"; }
cpu_tf=$(docker run --rm --network host visualize-convnets:cpu-test python -c 'import tensorflow as tf; print(tf.__version__)' 2>/dev/null) \
    || die "the CPU image cannot import TensorFlow"
say "docker build: the CPU image ($(size visualize-convnets:cpu-test), $((SECONDS - t)) s) imports TensorFlow $cpu_tf"
docker image prune -f >/dev/null  # layers of earlier builds; the current ones stay as cache

# -------------------------------------------------------------- test dataset
"$python" tests/mirror.py --port 0 > "$tmp/mirror.out" 2> "$tmp/mirror.err" &
mirror_pid=$!
for _ in $(seq 60); do [[ -s $tmp/mirror.out ]] && break; sleep 0.5; done
mirror_url=$(head -1 "$tmp/mirror.out")
[[ $mirror_url == http://127.0.0.1:* ]] || die "the test mirror did not start: $(tail -1 "$tmp/mirror.err")"
# Offline: compose.yaml passes the shell's OXFORD_PETS_URL on to train.
export OXFORD_PETS_URL=$mirror_url

latest_step() {  # the global step the checkpoint state file points at
    sed -nE 's/^model_checkpoint_path: ".*-([0-9]+)"$/\1/p' "$work/checkpoints/checkpoint"
}
resumed_from() {  # log step -> 0 when the log says the run resumed from that step
    grep -qE "Resumed from .*global step $2\b" "$1"
}

# ------------------------------------------------------ 1. compose up train
t=$SECONDS
EPOCHS=2 compose up --no-build --exit-code-from train train > "$tmp/train-up.log" 2>&1 \
    || { tail -20 "$tmp/train-up.log" >&2; die "1. docker-compose up train failed"; }
grep -qE 'GPU|CPU' "$tmp/train-up.log" || die "1. training did not say whether it runs on GPU or CPU"
ls "$work"/logs/train/events.* "$work"/logs/test/events.* >/dev/null 2>&1 || die "1. no TensorBoard events in logs/train and logs/test"
[[ -f $work/checkpoints/checkpoint ]] || die "1. no checkpoint state file after training"
[[ $(wc -l < "$tmp/nvidia-hook.calls" 2>/dev/null) == 1 ]] || die "1. train's GPU reservation did not reach the engine (no NVIDIA hook call)"
step1=$(latest_step)
say "1. docker-compose up train: data from OXFORD_PETS_URL, GPU reservation passed to the engine, trained to step $step1 ($((SECONDS - t)) s)"

# ------------------------------------------ 2. docker stop saves, next run resumes
await_resume_then_stop() {  # container log previous-step stop-command... -> sets $stopped_at
    local container=$1 log=$2 previous=$3 t_stop code; shift 3
    # (Logs go through a file: grep -q closing a pipe early would fail the pipeline under pipefail.)
    for _ in $(seq 120); do
        docker logs "$container" > "$log" 2>&1
        grep -q "Resumed from" "$log" && break
        [[ $(docker inspect -f '{{.State.Running}}' "$container") == true ]] || { tail -20 "$log" >&2; die "2. $container ended early"; }
        sleep 1
    done
    resumed_from "$log" "$previous" || die "2. $container did not resume from global step $previous: $(grep -m1 'Resumed' "$log")"
    sleep 5  # some steps past the resumed checkpoint, all in the training loop
    t_stop=$SECONDS
    "$@" > /dev/null 2>&1  # default 10 s grace, then SIGKILL
    ((SECONDS - t_stop < 10)) || die "2. $* took $((SECONDS - t_stop)) s: the grace period ran out"
    code=$(docker inspect -f '{{.State.ExitCode}}' "$container")
    docker logs "$container" > "$log" 2>&1
    [[ $code == 143 ]] || { tail -5 "$log" >&2; die "2. $*: exit status $code, not 143 (128+SIGTERM): no checkpoint on SIGTERM"; }
    stopped_at=$(latest_step)
    ((stopped_at > previous)) || die "2. no newer checkpoint after $* (step $stopped_at, was $previous)"
    [[ -f $work/checkpoints/model.ckpt-$stopped_at.index ]] || die "2. the checkpoint state names model.ckpt-$stopped_at, which is not there"
}
t=$SECONDS
pid1=vc-test-pid1-$$
containers+=("$pid1")
# Exec form: python is PID 1 and must handle SIGTERM itself.
mounts=()
for folder in data logs checkpoints gifs figures; do mounts+=(-v "$work/$folder:/workspace/$folder"); done
docker run -d --name "$pid1" --network host "${mounts[@]}" "$image" \
    python visualize_convnets.py --image-size 32 --batch-size 10 --seed 1 --summary-every 5 \
    --snapshot-every 10 --checkpoint-every 100000 --epochs 100000 > /dev/null
await_resume_then_stop "$pid1" "$tmp/pid1.log" "$step1" docker stop "$pid1"
step2=$stopped_at
docker rm "$pid1" > /dev/null
EPOCHS=100000 compose up --no-build -d train > "$tmp/train-up-d.log" 2>&1 \
    || { cat "$tmp/train-up-d.log" >&2; die "2. docker-compose up -d train failed"; }
await_resume_then_stop "$(compose ps -q train)" "$tmp/train-init.log" "$step2" compose stop train
step3=$stopped_at
EPOCHS=1 compose run -T --rm train > "$tmp/train-last.log" 2>&1 \
    || { tail -20 "$tmp/train-last.log" >&2; die "2. docker-compose run --rm train after the stop failed"; }
resumed_from "$tmp/train-last.log" "$step3" \
    || die "2. the next run did not resume from global step $step3: $(grep -m1 'Resumed' "$tmp/train-last.log")"
written=$(find "$work"/{data,logs,checkpoints,gifs,figures} -mindepth 1 | wc -l)
strangers=$(find "$work"/{data,logs,checkpoints,gifs,figures} \( ! -uid "$uid" -o ! -gid "$gid" \) | head -3)
[[ -z $strangers ]] || die "2. files on the host not owned by $uid:$gid: $strangers"
say "2. docker stop (python as PID 1), then docker-compose stop train (init): exit 143 within the grace period, checkpoints at steps $step2, $step3; each next run resumed from the last; all $written files on the host belong to $uid:$gid ($((SECONDS - t)) s)"

# ------------------------------------- 3. compose up -d tensorboard, port 6006
t=$SECONDS
"$python" -c 'import socket; socket.create_server(("127.0.0.1", 6006)).close()' 2>/dev/null \
    || die "3. port 6006 on this machine is in use: tensorboard's published port needs it"
compose up --no-build -d tensorboard > "$tmp/tensorboard-up.log" 2>&1 \
    || { cat "$tmp/tensorboard-up.log" >&2; die "3. docker-compose up -d tensorboard failed"; }
"$python" - http://127.0.0.1:6006 <<'EOF' || { compose logs tensorboard 2>&1 | tail -10 >&2; die "3. TensorBoard on port 6006 did not serve the run's scalars and filter images"; }
import json, sys, time, urllib.request
deadline = time.monotonic() + 120
while True:
    try:
        with urllib.request.urlopen(sys.argv[1] + "/data/plugin/scalars/tags", timeout=5) as response:
            scalars = json.load(response)
        with urllib.request.urlopen(sys.argv[1] + "/data/plugin/images/tags", timeout=5) as response:
            images = json.load(response)
        # The weights' and the probe's pictures are in the train run only.
        pictures = {"conv1_1_filters/image", "feature_maps/conv1_2", "feature_maps/conv2_2"}
        if all({"Loss", "Accuracy"} <= set(scalars.get(run, {})) for run in ("train", "test")) \
                and pictures <= set(images.get("train", {})):
            tags = {run: sorted(scalars[run]) + sorted(images.get(run, {})) for run in ("train", "test")}
            print(f"test-image: 3. TensorBoard tags: {json.dumps(tags)}")
            break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit(1)
    time.sleep(1)
EOF
compose stop tensorboard > /dev/null 2>&1
say "3. docker-compose up -d tensorboard answered on port 6006 from read-only logs ($((SECONDS - t)) s)"

# ----------------------------------------------------- 4. compose run gif
t=$SECONDS
compose run -T --rm gif > "$tmp/gif.log" 2>&1 || { tail -20 "$tmp/gif.log" >&2; die "4. docker-compose run --rm gif failed"; }
"$python" - "$work/gifs" "$uid" <<'EOF' || die "4. no GIF that decodes, owned by $uid"
import os, sys
from PIL import Image
folder, uid = sys.argv[1], int(sys.argv[2])
gifs = sorted(name for name in os.listdir(folder) if name.endswith(".gif"))
assert gifs, "no GIFs"
report = []
for name in gifs:
    path = os.path.join(folder, name)
    assert os.stat(path).st_uid == uid, f"{name} is not owned by {uid}"
    with Image.open(path) as picture:
        assert picture.format == "GIF", name
        frames = 0
        for frames in range(1, 100000):
            picture.load()
            try:
                picture.seek(frames)
            except EOFError:
                break
    report.append(f"{name} ({frames} frames, {picture.size[0]}x{picture.size[1]})")
print("test-image: 4. GIFs decode:", ", ".join(report))
EOF
say "4. docker-compose run --rm gif: GIFs from read-only checkpoints ($((SECONDS - t)) s)"

# -------------------------------------------- 5. compose up -d notebook, port 8888
t=$SECONDS
"$python" -c 'import socket; socket.create_server(("127.0.0.1", 8888)).close()' 2>/dev/null \
    || die "5. port 8888 on this machine is in use: the notebook's published port needs it"
# No JUPYTER_TOKEN from this shell: the server makes one and logs it, as a user first sees it.
JUPYTER_TOKEN='' compose up --no-build -d notebook > "$tmp/notebook-up.log" 2>&1 \
    || { cat "$tmp/notebook-up.log" >&2; die "5. docker-compose up -d notebook failed"; }
for _ in $(seq 180); do
    compose logs --no-color notebook > "$tmp/notebook.log" 2>&1
    grep -qE '[?&]token=[0-9a-f]{16,}' "$tmp/notebook.log" && break
    sleep 1
done
token=$(grep -oE '[?&]token=[0-9a-f]{16,}' "$tmp/notebook.log" | head -1 | cut -d= -f2)
[[ -n $token ]] || { tail -10 "$tmp/notebook.log" >&2; die "5. the notebook service logged no login token"; }
"$python" - http://127.0.0.1:8888 "$token" <<'EOF' || { tail -10 "$tmp/notebook.log" >&2; die "5. Jupyter on port 8888 did not serve its login page, or its logged token did not open the notebook"; }
import json, sys, time, urllib.error, urllib.request
url, token = sys.argv[1:]
deadline = time.monotonic() + 120
while True:
    try:
        with urllib.request.urlopen(url + "/login", timeout=5) as response:
            page = response.read().decode()
        if "<title>Jupyter" in page and "token" in page.lower():
            break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit("no login page on " + url)
    time.sleep(1)
notebook = url + "/api/contents/visualizing_convnets.ipynb?content=0"
try:
    urllib.request.urlopen(notebook, timeout=10)
    sys.exit("the API answered without the token")
except urllib.error.HTTPError as error:
    if error.code != 403:
        sys.exit(f"the API answered {error.code} without the token, not 403")
with urllib.request.urlopen(f"{notebook}&token={token}", timeout=10) as response:
    contents = json.load(response)
if contents["type"] != "notebook" or not contents["writable"]:
    sys.exit(f"not a writable notebook: {contents}")
print(f"test-image: 5. Jupyter's login page answered on {url}; the token from its log opened {contents['path']} (writable)")
EOF
compose stop notebook > /dev/null 2>&1
say "5. docker-compose up -d notebook served Jupyter on port 8888, its token in its log ($((SECONDS - t)) s)"
