#!/usr/bin/env bash
# Regenerates the bundled default avatar portrait and speech clip in src/lipstream/assets/default/.
# Needs espeak-ng and sox (Debian packages) and scikit-image (pip). Run once; the outputs are committed.
set -euo pipefail
out=src/lipstream/assets/default
tmp=$(mktemp -d)
espeak-ng -v en-us -s 150 -w "$tmp/raw.wav" \
  "Hello, I am the lipstream default avatar. [[_::_::]] Every word you hear moves my lips. [[_::_::]] When I stop talking, my mouth closes, and it stays closed."
sox "$tmp/raw.wav" -r 16000 -c 1 -b 16 "$out/speech.wav" pad 0.5 0.5
python - "$out/portrait.png" <<'PY'
import sys
import numpy as np
from PIL import Image
from skimage import data
face = data.astronaut()[2:258, 97:353]          # 256x256 around Eileen Collins' face
Image.fromarray(np.ascontiguousarray(face)).resize((512, 512), Image.LANCZOS).save(sys.argv[1])
PY
rm -r "$tmp"
