"""Lab: node backends (process, netns, qemu, ssh) and the ``plasma lab`` lifecycle."""
