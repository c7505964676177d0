#!/bin/bash
# Static holds from the domain's configuration: xl's nomigrate=1 /
# migration="no" in /etc/xen/NAME.cfg or /etc/xen/NAME, and libxl's stored
# "disable_migrate": "True".  (The test's /etc/xen and /var/lib/xen are
# private empty directories, bind-mounted in its mount namespace.)
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/xenenv.sh"
xenenv_init "$@"
xenenv_require_vmmig
xenenv_start

M=$XENENV_MNT
U5=$(uuid_for 5) U6=$(uuid_for 6) U7=$(uuid_for 7) U8=$(uuid_for 8)
printf 'name = "vm-cfg"\nmemory = 256\nnomigrate = 1\n' >/etc/xen/vm-cfg.cfg
printf 'name = "vm-plain"\nmigration = "no"\n' >/etc/xen/vm-plain
printf '{\n    "c_info": {\n        "name": "vm-json",\n        "uuid": "%s"\n    },\n    "b_info": {\n        "disable_migrate": "True"\n    }\n}\n' "$U7" \
    >"/var/lib/xen/userdata-d.7.$U7.libxl-json"
printf 'name = "vm-free"\nnomigrate = 0\n' >/etc/xen/vm-free.cfg
xs_add 5 vm-cfg "$U5" && xs_add 6 vm-plain "$U6" && xs_add 7 vm-json "$U7" &&
    xs_add 8 vm-free "$U8" || bail_out "xsfake add failed"

vmmigfs_start "$M"
ok $? "vmmigfs mounts" || done_testing
for d in vm-cfg vm-plain vm-json vm-free; do
    wait_domain $d || bail_out "$d never appeared"
done

check_static() { # NAME SOURCE
    local D=$M/$1
    is "$(fs_cat "$D/lock")" 1 "$1: locked by its configuration"
    like "$(fs_cat "$D/status")" "^hold: static source=$2( |$)" "$1: status: hold: static source=$2"
    fs_write "$D/lock" 0
    is "$(fs_cat "$D/lock")" 1 "$1: echo 0 > lock does not release a static hold"
    fs_write "$D/migrate" localhost
    like "$FS_ERR" 'Device or resource busy' "$1: migrate refused (EBUSY)"
    like "$(status_field "$(fs_cat "$D/status")" last_refusal)" 'static' "$1: last_refusal names the static hold"
}
check_static vm-cfg /etc/xen/vm-cfg.cfg
check_static vm-plain /etc/xen/vm-plain
check_static vm-json "/var/lib/xen/userdata-d.7.$U7.libxl-json"
is "$(fs_cat "$M/vm-free/lock")" 0 "vm-free (nomigrate = 0): not locked"
run_fails "no migration was started (vmmig send not run)" test -e "$XENENV_SEND_CALLS"

done_testing
