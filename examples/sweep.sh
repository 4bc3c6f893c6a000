# shellcheck shell=bash
# Shared by table1.sh and ablations.sh (sourced, not run): `list` and `run NAME...|all [-- overrides]`
# over the caller's SWEEP array of "name|recipe relative to examples/|description" entries.
#
# The caller sets SWEEP, SWEEP_TITLE (the description column's heading) and SWEEP_USAGE (the line
# range of its header comment that shows the usage), then calls `lpreg_sweep "$@"`. Each run keeps
# its recipe's experiment name: EXP_NAME, CKPTS_DIR and MODEL_PATH are cleared for every run. Every
# name is checked before anything is launched; the sweep stops at the first failed run.

_SWEEP_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
_SWEEP_SCRIPT=$(basename "$0")

_sweep_usage() {
    sed -n "${SWEEP_USAGE}s/^#  *//p" "$0" >&2
    exit 2
}

_sweep_recipe_of() {
    local entry
    for entry in "${SWEEP[@]}"; do
        if [[ ${entry%%|*} == "$1" ]]; then
            entry=${entry#*|}
            printf '%s\n' "${entry%%|*}"
            return 0
        fi
    done
    echo "$_SWEEP_SCRIPT: unknown run '$1' (see: bash examples/$_SWEEP_SCRIPT list)" >&2
    return 1
}

_sweep_list() {
    local entry name recipe row name_width=4 recipe_width=6
    for entry in "${SWEEP[@]}"; do
        IFS='|' read -r name recipe row <<<"$entry"
        ((${#name} > name_width)) && name_width=${#name}
        ((${#recipe} + 9 > recipe_width)) && recipe_width=$((${#recipe} + 9))
    done
    printf "%-${name_width}s  %-${recipe_width}s  %s\n" NAME RECIPE "$SWEEP_TITLE"
    for entry in "${SWEEP[@]}"; do
        IFS='|' read -r name recipe row <<<"$entry"
        printf "%-${name_width}s  %-${recipe_width}s  %s\n" "$name" "examples/$recipe" "$row"
    done
}

_sweep_run() {
    local -a names=() overrides=() recipes=()
    local entry name i
    while (($#)); do
        if [[ $1 == -- ]]; then
            shift
            overrides=("$@")
            break
        fi
        names+=("$1")
        shift
    done
    ((${#names[@]})) || _sweep_usage
    if [[ ${names[*]} == all ]]; then
        names=()
        for entry in "${SWEEP[@]}"; do
            names+=("${entry%%|*}")
        done
    fi
    for name in "${names[@]}"; do # check every name before launching anything
        recipes+=("$(_sweep_recipe_of "$name")")
    done
    for i in "${!names[@]}"; do
        echo "=== $_SWEEP_SCRIPT: ${names[i]} (examples/${recipes[i]})" >&2
        env -u EXP_NAME -u CKPTS_DIR -u MODEL_PATH bash "$_SWEEP_HERE/${recipes[i]}" "${overrides[@]}"
    done
}

lpreg_sweep() {
    case ${1:-} in
        list) _sweep_list ;;
        run)
            shift
            _sweep_run "$@"
            ;;
        *) _sweep_usage ;;
    esac
}
