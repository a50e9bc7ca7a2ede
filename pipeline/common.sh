# Shared by the recipes: `run` prints each command and runs it, unless DRY_RUN=1 (then it only prints).
run() {
    echo "+ $*"
    if [ "${DRY_RUN:-0}" != 1 ]; then "$@"; fi
}
