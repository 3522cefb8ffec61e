#!/bin/bash
# rkdump's capture image for dracut distributions (Fedora, RHEL, SUSE...).
#
#   dracut -m rkdump --kver RELEASE IMAGE     (or: rkdump mkinitrd --dracut)
#
# builds a kdump initramfs whose /init is rkdump, with the same kdump.conf (the dump target
# resolved), keys, hooks, extra_bins and hostonly drivers as `rkdump mkinitrd`: install() asks
# rkdump to write exactly those files into $initdir. The module never gets into a system's
# normal initramfs: check() returns 255, "only when asked for by name".
#
# The environment may name the rkdump binary (RKDUMP_BINARY), another kdump.conf
# (RKDUMP_CONFIG) and ask for every storage, network and watchdog driver
# (RKDUMP_ALL_DRIVERS=1); `rkdump mkinitrd --dracut` sets them.

# Only when requested explicitly (-m rkdump / --add rkdump).
check() {
    require_binaries rkdump || return 1
    return 255
}

# rkdump needs nothing of dracut's: no shell, udev or systemd in the capture.
depends() {
    return 0
}

# The drivers come with install(): rkdump resolves them from the dump target's device stack,
# the NICs of a network target and the active watchdogs, as its own builder does.
installkernel() {
    return 0
}

install() {
    local rkdump
    rkdump=${RKDUMP_BINARY:-$(command -v rkdump)} || return 1
    local args=(mkinitrd --kver "$kernel" --tree "$initdir")
    [[ -n ${RKDUMP_CONFIG:-} ]] && args+=(--config "$RKDUMP_CONFIG")
    [[ ${RKDUMP_ALL_DRIVERS:-0} == 1 ]] && args+=(--all-drivers)
    if ! "$rkdump" "${args[@]}"; then
        dfatal "rkdump mkinitrd could not write the capture image's files"
        exit 1
    fi
}
