#!/usr/bin/env bash
# Build the project's Dockerfile unchanged and run the image for real, on a
# machine with Docker's engine installed but not running and no registry:
#
#   start a private dockerd (host network only), make or reuse a stand-in for the
#   TensorFlow base, build the GPU and CPU images, then with the image
#   1. train briefly on bind mounts as the build-arg uid; host files owned by it
#   2. docker stop a longer run (PID 1, then --init): a newer checkpoint, and
#      the next run resumes from it
#   3. the compose file's TensorBoard command on read-only logs answers over HTTP
#   4. the compose file's GIF command writes GIFs that decode
#   then stop the engine (by its pid) and clean up, also on failure.
#
# Needs root, docker.io and debootstrap (apt), python3 with PyYAML and Pillow.
# The engine's data root (images, build cache) and the stand-in are kept under
# $IMAGE_TEST_CACHE so a warm run skips the slow parts.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "test-image: FAIL: $*" >&2; exit 1; }
say() { echo "test-image: $*"; }

[[ $(id -u) == 0 ]] || die "needs root to start dockerd"
for tool in dockerd docker python3; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y docker.io debootstrap)"
done
python3 -c 'import yaml, PIL' 2>/dev/null || die "python3 needs PyYAML and Pillow"
for code in visualize_convnets.py filter_gif.py; do
    [[ -f $code ]] || die "$code is missing: nothing to test yet"
done

cache=${IMAGE_TEST_CACHE:-/var/cache/visualize-convnets}
mkdir -p "$cache"
# One check at a time: a second engine cannot share the data root.
exec 9> "$cache/.lock"
flock -n 9 || die "another image check holds $cache/.lock"
image=visualize-convnets:image-test
uid=4242 gid=4343  # not 1000, so the build args, not the defaults, are what is proven
started=$SECONDS
# A short path: the engine's unix sockets live under it (108-byte limit).
tmp=$(mktemp -d /tmp/vc-test.XXXXXX)
export DOCKER_HOST=unix://$tmp/docker.sock
# The classic builder: the Dockerfile needs no BuildKit, and users may not have it.
export DOCKER_BUILDKIT=0
dockerd_pid='' mirror_pid='' containers=()

cleanup() {
    local status=$?
    set +e
    ((${#containers[@]})) && docker rm -f "${containers[@]}" >/dev/null 2>&1
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

# --------------------------------------------------------------------- engine
start_engine() {  # driver -> 0 when the engine answers
    local driver=$1
    [[ -d $cache/docker-$driver ]] || new_root=$cache/docker-$driver
    mkdir -p "$cache/docker-$driver"
    dockerd --data-root "$cache/docker-$driver" --exec-root "$tmp/exec" \
        --pidfile "$tmp/dockerd.pid" -H "$DOCKER_HOST" --storage-driver "$driver" \
        --bridge=none --iptables=false --ip6tables=false \
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

# ------------------------------------------------------------- base and build
tf_tag=$(sed -nE 's/^ARG TF_TAG=([^ ]+)$/\1/p' Dockerfile)
[[ -n $tf_tag ]] || die "no 'ARG TF_TAG=' default in the Dockerfile"
cpu_tag=${tf_tag%-gpu}
t=$SECONDS
docker/build-standin-base.sh "tensorflow/tensorflow:$tf_tag" "tensorflow/tensorflow:$cpu_tag" \
    > "$tmp/standin.log" 2>&1 || { tail -20 "$tmp/standin.log" >&2; die "could not make the stand-in base"; }
grep -q reusing "$tmp/standin.log" && how=reused || how=built
say "stand-in base tensorflow/tensorflow:$tf_tag $how ($((SECONDS - t)) s)"

build() {  # log-name tag [build args...]
    local name=$1 tag=$2 t=$SECONDS; shift 2
    docker build --network host --pull=false "$@" -t "$tag" . > "$tmp/build-$name.log" 2>&1 \
        || { tail -30 "$tmp/build-$name.log" >&2; die "docker build ($name) failed"; }
    say "built $tag ($name, $(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.2f GB", $1/1e9}'), $((SECONDS - t)) s)"
}
build gpu "$image" --build-arg USER_UID=$uid --build-arg USER_GID=$gid
build cpu "$image-cpu" --build-arg TF_TAG="$cpu_tag" --build-arg USER_UID=$uid --build-arg USER_GID=$gid
docker image prune -f >/dev/null  # layers of earlier builds; the current ones stay as cache
[[ $(docker image inspect -f '{{.Config.User}}' "$image") == "$uid:$gid" ]] \
    || die "the image does not run as the build-arg user $uid:$gid"
cpu_tf=$(docker run --rm --network host "$image-cpu" python -c 'import tensorflow as tf; print(tf.__version__)' 2>/dev/null) \
    || die "the CPU image cannot import TensorFlow"
say "the CPU image imports TensorFlow $cpu_tf"

# -------------------------------------------------------------- test dataset
python3 tests/mirror.py --out "$tmp/mirror" --port 0 > "$tmp/mirror.out" 2> "$tmp/mirror.err" &
mirror_pid=$!
for _ in $(seq 60); do [[ -s $tmp/mirror.out ]] && break; sleep 0.5; done
mirror_url=$(head -1 "$tmp/mirror.out")
[[ $mirror_url == http://127.0.0.1:* ]] || die "the test mirror did not start: $(tail -1 "$tmp/mirror.err")"

work=$tmp/work
mkdir -p "$work"/{data,logs,checkpoints,gifs,figures}
chown -R "$uid:$gid" "$work"
mounts=()
for folder in data logs checkpoints gifs figures; do mounts+=(-v "$work/$folder:/workspace/$folder"); done
small=(--image-size 32 --batch-size 10 --summary-every 1 --snapshot-every 2 --seed 1)

latest_step() {  # the global step the checkpoint state file points at
    sed -nE 's/^model_checkpoint_path: ".*-([0-9]+)"$/\1/p' "$work/checkpoints/checkpoint"
}

# ------------------------------------------------ 1. short training, ownership
t=$SECONDS
docker run --rm --network host -e OXFORD_PETS_URL="$mirror_url" "${mounts[@]}" "$image" \
    python visualize_convnets.py "${small[@]}" --epochs 2 > "$tmp/train1.log" 2>&1 \
    || { tail -20 "$tmp/train1.log" >&2; die "1. the short training run failed"; }
grep -qE 'GPU|CPU' "$tmp/train1.log" || die "1. training did not say whether it runs on GPU or CPU"
[[ -f $work/checkpoints/checkpoint ]] || die "1. no checkpoint state file after training"
ls "$work"/logs/train/events.* "$work"/logs/test/events.* >/dev/null 2>&1 || die "1. no TensorBoard events in logs/train and logs/test"
step1=$(latest_step)
written=$(find "$work" -mindepth 2 | wc -l)
strangers=$(find "$work" -mindepth 1 \( ! -uid "$uid" -o ! -gid "$gid" \) | head -3)
[[ -z $strangers ]] || die "1. files on the host not owned by $uid:$gid: $strangers"
say "1. trained to step $step1 on bind mounts; all $written files on the host belong to $uid:$gid ($((SECONDS - t)) s)"

# ------------------------------------------ 2. docker stop saves, next run resumes
# Twice: python as PID 1 (exec form, plain docker run) and under docker's init
# (--init, compose's init: true). Each long run must resume where the one before
# stopped, and a last short run from the final checkpoint.
stop_long_run() {  # name previous-step [docker run options...] -> sets $stopped_at
    local name=$1 previous=$2 log=$tmp/$1.log t_stop code; shift 2
    containers+=("$name")
    docker run -d --name "$name" --network host "$@" "${mounts[@]}" "$image" \
        python visualize_convnets.py "${small[@]}" --epochs 100000 --checkpoint-every 100000 \
        --summary-every 10 --snapshot-every 20 > /dev/null
    # (Logs go through a file: grep -q closing a pipe early would fail the pipeline under pipefail.)
    for _ in $(seq 120); do
        docker logs "$name" > "$log" 2>&1
        grep -q "Resumed from" "$log" && break
        [[ $(docker inspect -f '{{.State.Running}}' "$name") == true ]] || { tail -20 "$log" >&2; die "2. $name ended early"; }
        sleep 1
    done
    grep -qE "Resumed from .*global step $previous\b" "$log" \
        || die "2. $name did not resume from global step $previous: $(grep -m1 'Resumed' "$log")"
    sleep 5  # some steps past the resumed checkpoint, all in the training loop
    t_stop=$SECONDS
    docker stop "$name" > /dev/null  # default 10 s grace, then SIGKILL
    ((SECONDS - t_stop < 10)) || die "2. docker stop $name took $((SECONDS - t_stop)) s: the grace period ran out"
    code=$(docker inspect -f '{{.State.ExitCode}}' "$name")
    docker logs "$name" > "$log" 2>&1
    [[ $code == 143 ]] || { tail -5 "$log" >&2; die "2. docker stop $name: exit status $code, not 143 (128+SIGTERM): no checkpoint on SIGTERM"; }
    stopped_at=$(latest_step)
    ((stopped_at > previous)) || die "2. no newer checkpoint after docker stop $name (step $stopped_at, was $previous)"
    [[ -f $work/checkpoints/model.ckpt-$stopped_at.index ]] || die "2. the checkpoint state names model.ckpt-$stopped_at, which is not there"
    docker rm "$name" > /dev/null
}
t=$SECONDS
stop_long_run "vc-test-pid1-$$" "$step1" -e OXFORD_PETS_URL="$mirror_url"
step2=$stopped_at
stop_long_run "vc-test-init-$$" "$step2" --init
step3=$stopped_at
docker run --rm --network host "${mounts[@]}" "$image" \
    python visualize_convnets.py "${small[@]}" --epochs 1 > "$tmp/train-last.log" 2>&1 \
    || { tail -20 "$tmp/train-last.log" >&2; die "2. the run after docker stop failed"; }
grep -qE "Resumed from .*global step $step3\b" "$tmp/train-last.log" \
    || die "2. the next run did not resume from global step $step3: $(grep -m1 'Resumed' "$tmp/train-last.log")"
say "2. docker stop (PID 1, then --init): exit 143 within the grace period, checkpoints at steps $step2, $step3; each next run resumed from the last ($((SECONDS - t)) s)"

# Commands as the compose file has them, so a wrong compose command fails here.
compose_command() {  # service -> its command, one word a line
    python3 - "$1" <<'EOF'
import sys, yaml
with open("docker/compose.yaml") as handle:
    print("\n".join(yaml.safe_load(handle)["services"][sys.argv[1]]["command"]))
EOF
}

# -------------------------------------------- 3. TensorBoard on read-only logs
t=$SECONDS
mapfile -t tensorboard < <(compose_command tensorboard)
((${#tensorboard[@]})) || die "3. no tensorboard command in docker/compose.yaml"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
board=vc-test-tensorboard-$$
containers+=("$board")
docker run -d --name "$board" --network host -v "$work/logs:/workspace/logs:ro" "$image" \
    "${tensorboard[@]}" --port "$port" > /dev/null
python3 - "http://127.0.0.1:$port/data/plugin/scalars/tags" <<'EOF' || { docker logs "$board" 2>&1 | tail -10 >&2; die "3. TensorBoard did not serve the Loss and Accuracy scalars"; }
import json, sys, time, urllib.request
deadline = time.monotonic() + 120
while True:
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=5) as response:
            tags = json.load(response)
        if all({"Loss", "Accuracy"} <= set(tags.get(run, {})) for run in ("train", "test")):
            print(f"test-image: 3. TensorBoard scalar tags: {json.dumps({run: sorted(t) for run, t in tags.items()})}")
            break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit(1)
    time.sleep(1)
EOF
docker rm -f "$board" > /dev/null
say "3. TensorBoard answered from read-only logs ($((SECONDS - t)) s)"

# ----------------------------------------------------------------- 4. GIFs
t=$SECONDS
mapfile -t gif < <(compose_command gif)
((${#gif[@]})) || die "4. no gif command in docker/compose.yaml"
docker run --rm --network host -v "$work/checkpoints:/workspace/checkpoints:ro" \
    -v "$work/gifs:/workspace/gifs" "$image" "${gif[@]}" > "$tmp/gif.log" 2>&1 \
    || { tail -20 "$tmp/gif.log" >&2; die "4. the GIF command failed"; }
python3 - "$work/gifs" "$uid" <<'EOF' || die "4. no GIF that decodes, owned by $uid"
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
say "4. GIFs made from read-only checkpoints ($((SECONDS - t)) s)"
