# Sourced by scripts/test-v2.sh and scripts/test-systemd.sh: what both VMs' image holds beyond
# the rig's own list. One list for both, because the rig caches a single image and rebuilds it
# whenever the list changes: two lists would rebuild it twice in every CI run.
# umoci builds the images of tests/integration/test_images.py (the VM has no network, so it must
# be in its image). Not skopeo: its dependency golang-github-containers-common fails to configure
# under debootstrap, and the image build fails; the one test that needs skopeo (the
# docker-archive form) runs on the host only.
export VM_PACKAGES="${VM_PACKAGES:+$VM_PACKAGES }umoci"
