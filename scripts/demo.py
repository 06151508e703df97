"""The main job on a built-in example: make an image, attach it, use it, detach."""
import os
import tempfile

import loopcore

with tempfile.TemporaryDirectory(prefix="loopcore-demo-") as tmp:
    image = os.path.join(tmp, "example.img")
    with open(image, "wb") as f:
        f.truncate(16 << 20)
    with loopcore.attach(image, block_size=4096) as dev:
        info = dev.info()
        print(f"attached {image} -> {dev.path} ({info.size_bytes} bytes, "
              f"block size {info.block_size}, flags {info.flags!r}, diskseq {dev.diskseq})")
        with open(dev.path, "r+b", buffering=0) as disk:
            disk.seek(4096)
            disk.write(b"hello from loopcore".ljust(4096, b"\0"))
    with open(image, "rb") as f:
        f.seek(4096)
        print("read back from the image file:", f.read(19).decode())
    print("detached; bound devices left for this image:",
          [d for d in os.listdir("/sys/block") if d.startswith("loop")
           and os.path.exists(f"/sys/block/{d}/loop/backing_file")
           and open(f"/sys/block/{d}/loop/backing_file").read().strip() == image])
