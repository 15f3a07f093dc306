#!/usr/bin/env bash
# Ship a release to the VM over SSH, or return it to the previous one.
#
#   scripts/deploy.sh [TAG]        # TAG: a tag, branch or commit pushed to origin;
#                                  # default $TAG, else the newest tag reachable from
#                                  # HEAD, else the current commit
#   scripts/rollback.sh            # = DEPLOY_ACTION=rollback scripts/deploy.sh
#
# On the VM (a git clone of this repository in VM_DIR, see infra/vm/provision.sh):
# fetch, check out TAG (detached), `docker compose up -d --build`, wait until healthy,
# then record TAG in .deploy/history (one release per line, newest last) and
# .deploy/current; every action is appended to .deploy/deploy.log. If the new release
# never becomes healthy, the previous one is brought back (AUTO_ROLLBACK=0 to keep the
# failed state for inspection) and the script fails.
#
# A rollback checks out the release before the current one in .deploy/history, brings it
# up, waits for health and pops the current one off the history (so a second rollback
# goes one release further back). Code only: migrations must stay backward compatible
# (docs/operations.md, "Deploy" and "Rollback").
#
# Environment:
#   VM_HOST (required)  VM_USER (deploy)  VM_PORT (22)  VM_SSH_KEY (ssh default keys)
#   VM_DIR (/opt/brokerx)  SSH_OPTS (extra ssh options, e.g. -o UserKnownHostsFile=...)
#   COMPOSE_CMD    run on the VM to start the release (default: docker compose up -d
#                  --build --remove-orphans --wait: fails if a container stays unhealthy)
#   HEALTH_CMD     run on the VM, must succeed once the release is healthy
#                  (default: poll https://localhost/health for HEALTH_TIMEOUT seconds)
#   HEALTH_TIMEOUT (180)  AUTO_ROLLBACK (1)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
action="${DEPLOY_ACTION:-deploy}"

die() { printf '%s: ERROR: %s\n' "$action" "$*" >&2; exit 1; }

case "$action" in
    deploy) [[ $# -le 1 ]] || die "usage: scripts/deploy.sh [TAG]" ;;
    rollback) [[ $# -eq 0 ]] || die "usage: scripts/rollback.sh" ;;
    *) die "DEPLOY_ACTION must be deploy or rollback" ;;
esac

[[ -n "${VM_HOST:-}" ]] || die "VM_HOST is not set (e.g. make deploy VM_HOST=brokerx.example.com)"
vm_user="${VM_USER:-deploy}"
vm_port="${VM_PORT:-22}"
vm_dir="${VM_DIR:-/opt/brokerx}"
health_timeout="${HEALTH_TIMEOUT:-180}"
auto_rollback="${AUTO_ROLLBACK:-1}"
compose_cmd="${COMPOSE_CMD:-docker compose up -d --build --remove-orphans --wait --wait-timeout 300}"
# Default health wait: the public /health through nginx (api + its dependency checks).
default_health="deadline=\$((SECONDS + $health_timeout)); until curl -fsSk --max-time 5 -o /dev/null https://localhost/health; do if ((SECONDS >= deadline)); then echo \"not healthy after ${health_timeout}s\" >&2; exit 1; fi; sleep 5; done"
health_cmd="${HEALTH_CMD:-$default_health}"

ref=""
if [[ "$action" == deploy ]]; then
    ref="${1:-${TAG:-}}"
    if [[ -z "$ref" ]]; then
        ref="$(git -C "$repo_root" describe --tags --abbrev=0 2>/dev/null ||
            git -C "$repo_root" rev-parse HEAD 2>/dev/null)" ||
            die "no TAG given and no tag or commit found in $repo_root"
    fi
    [[ "$ref" =~ ^[A-Za-z0-9._/+-]+$ ]] || die "refusing a strange ref name: '$ref'"
fi

ssh_cmd=(ssh -p "$vm_port" -o BatchMode=yes -o ConnectTimeout=15
    -o StrictHostKeyChecking=accept-new -o ServerAliveInterval=30)
[[ -n "${VM_SSH_KEY:-}" ]] && ssh_cmd+=(-i "$VM_SSH_KEY" -o IdentitiesOnly=yes)
if [[ -n "${SSH_OPTS:-}" ]]; then
    read -r -a extra_opts <<< "$SSH_OPTS"
    ssh_cmd+=("${extra_opts[@]}")
fi

# Runs on the VM with bash: $1 action, $2 dir, $3 ref, $4 compose command,
# $5 health command, $6 auto rollback.
remote_script=$(cat <<'REMOTE'
set -euo pipefail
action=$1 dir=$2 ref=$3 compose_cmd=$4 health_cmd=$5 auto_rollback=$6

say() { printf '[%s] %s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$action" "$*"; }
die() { say "ERROR: $*" >&2; exit 1; }

cd "$dir" 2>/dev/null || die "$dir does not exist on $(hostname) (see infra/vm/provision.sh)"
git rev-parse --is-inside-work-tree >/dev/null 2>&1 || die "$dir is not a git checkout"
mkdir -p .deploy
exec 9>.deploy/lock
flock -n 9 || die "another deploy or rollback is running (.deploy/lock)"
touch .deploy/history
current=$(cat .deploy/current 2>/dev/null || true)

journal() { printf '%s %s %s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$action" "$1" "$2" >> .deploy/deploy.log; }

resolve() {  # a tag, an origin branch or a commit -> commit id
    local name=$1
    git rev-parse --verify --quiet "refs/tags/$name^{commit}" ||
        git rev-parse --verify --quiet "refs/remotes/origin/$name^{commit}" ||
        git rev-parse --verify --quiet "$name^{commit}" ||
        return 1
}

bring_up() {  # ref -> checkout, compose, health
    local name=$1 commit
    commit=$(resolve "$name") || die "$name is not a tag, branch or commit of origin (pushed?)"
    say "checking out $name ($commit)"
    git -c advice.detachedHead=false checkout --quiet --detach "$commit" ||
        die "checkout of $name failed (local changes in $dir? see git status)"
    say "starting: $compose_cmd"
    bash -c "$compose_cmd" || return 1
    say "waiting for health"
    bash -c "$health_cmd" || return 1
}

set_current() {
    printf '%s\n' "$1" > .deploy/current.tmp
    mv -f .deploy/current.tmp .deploy/current
}

say "fetching from origin"
git fetch --quiet --tags --force --prune origin || die "git fetch failed"

if [[ "$action" == deploy ]]; then
    if bring_up "$ref"; then
        if [[ "$(tail -n 1 .deploy/history)" != "$ref" ]]; then
            printf '%s\n' "$ref" >> .deploy/history
        fi
        set_current "$ref"
        journal "$ref" ok
        say "$ref is live (previous: ${current:-none})"
        exit 0
    fi
    journal "$ref" failed
    if [[ "$auto_rollback" == 1 && -n "$current" && "$current" != "$ref" ]]; then
        say "$ref is not healthy: bringing $current back"
        if bring_up "$current"; then
            journal "$current" restored
            die "deploy of $ref failed; $current is live again"
        fi
        die "deploy of $ref failed and $current did not come back healthy: intervene now"
    fi
    die "deploy of $ref failed (nothing rolled back; .deploy/current still says ${current:-none})"
fi

# rollback: the release before the current one.
mapfile -t releases < .deploy/history
count=${#releases[@]}
if (( count > 0 )) && [[ "${releases[count - 1]}" == "$current" ]]; then
    count=$((count - 1))
fi
(( count > 0 )) || die "no earlier release in .deploy/history to roll back to"
target=${releases[count - 1]}
say "rolling back from ${current:-unknown} to $target"
if ! bring_up "$target"; then
    journal "$target" failed
    die "$target did not come back healthy: inspect with docker compose ps / logs"
fi
printf '%s\n' "${releases[@]:0:count}" > .deploy/history.tmp
mv -f .deploy/history.tmp .deploy/history
set_current "$target"
journal "$target" ok
say "$target is live (rolled back from ${current:-unknown})"
REMOTE
)

remote_args=("$action" "$vm_dir" "$ref" "$compose_cmd" "$health_cmd" "$auto_rollback")
printf -v remote_command '%q ' bash -s -- "${remote_args[@]}"

echo "$action: ${ref:+$ref -> }$vm_user@$VM_HOST:$vm_dir"
"${ssh_cmd[@]}" "$vm_user@$VM_HOST" "$remote_command" <<< "$remote_script"
