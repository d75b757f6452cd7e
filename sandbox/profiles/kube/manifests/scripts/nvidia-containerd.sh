set -eu
nvidia-ctk runtime configure --runtime=containerd --config-source=command --set-as-default
systemctl restart containerd
