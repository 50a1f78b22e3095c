"""A stand-in for mirrord's agent: steal (iptables REDIRECT) or mirror (sniff) a pod's port.

It exists so the mirrord-ambient-steal lab can put the *real* rules mirrord's agent
installs next to Istio's in-pod rules and let the kernel show what happens. It is run
inside the target pod's netns (`python -m netlab.dataplane.steal ...`) with a dedicated
gid, because mirrord's OUTPUT chain skips its own traffic by `--gid-owner`.
"""
