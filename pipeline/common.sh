# Shared by the recipes: `run` prints each command and runs it, unless DRY_RUN=1 (then it only prints).
run() {
    echo "+ $*"
    if [ "${DRY_RUN:-0}" != 1 ]; then "$@"; fi
}

# A path made absolute against the directory the recipe was started from (no symlinks resolved), so that the
# commands it prints and runs mean the same from any working directory.
absolute() {
    case "$1" in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s\n' "$PWD/$1" ;;
    esac
}
