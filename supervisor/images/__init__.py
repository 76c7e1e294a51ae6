"""Container images as sandbox roots: reading OCI layouts and `docker save` archives
(reference.py, oci.py), unpacking their layers safely into a content-addressed store
(unpack.py, store.py), and the helper process that does the unpacking off the daemon's loop
(__main__.py). Nothing here touches the network: operators fetch images with skopeo.
"""
