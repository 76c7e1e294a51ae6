# packaging/layout.sh: the files of an installation and where each goes, in one place for
# install.sh and uninstall.sh (flavor "local", a checkout install under /usr/local and /etc)
# and build-deb.sh (flavor "deb", Debian's paths). Sourced, not run. The venv itself is each
# installer's own business (a release per install vs one venv in the package).

# layout_files FLAVOR: one "MODE SOURCE DEST" line per file. SOURCE is relative to the
# checkout, or under gen/ for what `python -m supervisor.docs_gen` generates.
layout_files() {
    local units share zsh
    case $1 in
    local) # /usr/local: what dpkg does not own (as the /usr/local/bin links)
        units=/etc/systemd/system share=/usr/local/share zsh=/usr/local/share/zsh/site-functions ;;
    deb) units=/lib/systemd/system share=/usr/share zsh=/usr/share/zsh/vendor-completions ;;
    *) echo "layout_files: unknown flavor $1" >&2 && return 1 ;;
    esac
    cat <<LIST
0755 packaging/sandboxd-stop /opt/sandboxd/libexec/sandboxd-stop
0755 packaging/sandboxd-holder /opt/sandboxd/libexec/sandboxd-holder
0644 README.md /opt/sandboxd/README.md
0644 packaging/sandboxd.service $units/sandboxd.service
0644 packaging/sandboxd-sandboxes.service $units/sandboxd-sandboxes.service
0644 packaging/sandboxd.tmpfiles /usr/lib/tmpfiles.d/sandboxd.conf
0644 packaging/sandboxd.sysusers /usr/lib/sysusers.d/sandboxd.conf
0644 gen/man/sandboxctl.1 $share/man/man1/sandboxctl.1
0644 gen/man/sandboxd.unit.5 $share/man/man5/sandboxd.unit.5
0644 gen/man/sandboxd.8 $share/man/man8/sandboxd.8
0644 gen/bash/sandboxctl $share/bash-completion/completions/sandboxctl
0644 gen/bash/sandboxd $share/bash-completion/completions/sandboxd
0644 gen/zsh/_sandboxctl $zsh/_sandboxctl
0644 gen/zsh/_sandboxd $zsh/_sandboxd
LIST
}

# layout_install FLAVOR CHECKOUT GEN ROOT: install every file under ROOT ("" for /). The deb
# flavor compresses man pages, as Debian policy asks.
layout_install() {
    local flavor=$1 checkout=$2 gen=$3 root=$4 mode src dest
    while read -r mode src dest; do
        case $src in
        gen/*) src=$gen/${src#gen/} ;;
        *) src=$checkout/$src ;;
        esac
        install -D -m "$mode" "$src" "$root$dest"
        if [[ $flavor == deb && $dest == */man/man* ]]; then
            gzip -9nf "$root$dest"
        fi
    done < <(layout_files "$flavor")
}

# layout_remove FLAVOR: remove every installed file (a flavor's own files only).
layout_remove() {
    local mode src dest
    while read -r mode src dest; do
        rm -f "$dest"
    done < <(layout_files "$1")
}
