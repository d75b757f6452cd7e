set -eu
if grep -qx 'ModifyDeviceFiles: 1' /proc/driver/nvidia/params; then
  umount -R /proc/driver/nvidia
  cp /proc/driver/nvidia/params /root/gpu-params
  sed -i 's/^ModifyDeviceFiles: 1$/ModifyDeviceFiles: 0/' /root/gpu-params
  mount --bind /root/gpu-params /proc/driver/nvidia/params
fi
