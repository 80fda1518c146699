#!/usr/bin/env bash
# Makes two ~20 s talking-head videos the project may show (docs/neural.md's sheets), from a
# public-domain photo driven by lipstream's own warp renderer (head sway and blinks on) and
# espeak-ng speech; then prepares them as video avatars.
#   astronaut-720x1280: a 9:16 portrait crop of skimage's astronaut (NASA's portrait of Eileen
#                       Collins, public domain) upscaled 2.5x (Lanczos), voice en-us;
#   portrait-512:       the bundled default portrait (the same photo, a face crop), voice en-us+f3.
# Needs espeak-ng, ffmpeg; the astronaut PNG as $2 or scikit-image installed.
# Usage: tools/make_neural_footage.sh OUT_DIR [astronaut.png]
set -euo pipefail
out=$1
mkdir -p "$out"
astronaut=${2:-$(python -c 'import skimage, os; print(os.path.join(os.path.dirname(skimage.__file__), "data", "astronaut.png"))')}
python - "$astronaut" "$out/astronaut-720x1280.png" <<'PY'
import sys
import cv2
photo = cv2.imread(sys.argv[1])[0:512, 81:369]  # 288 x 512 (9:16) around the face
cv2.imwrite(sys.argv[2], cv2.resize(photo, (720, 1280), interpolation=cv2.INTER_LANCZOS4))
PY
cp src/lipstream/assets/default/portrait.png "$out/portrait-512.png"
say() {  # voice, text, wav
  espeak-ng -v "$1" -s 145 -w "$3.raw.wav" "$2"
  ffmpeg -loglevel error -y -i "$3.raw.wav" -af "adelay=300,apad=pad_dur=0.3" -ar 16000 -ac 1 -sample_fmt s16 "$3"
  rm "$3.raw.wav"
}
say en-us "Good morning. Today I will tell you how a rocket leaves the ground. [[_::_::]] First the engines light, and the whole vehicle shakes. Then the clamps open, and it rises slowly, faster and faster, until the sky turns dark. [[_::_::]] We float in silence, and the Earth below is blue and white. Every orbit takes about ninety minutes, so we see the sun rise sixteen times a day." "$out/astronaut.wav"
say en-us+f3 "Thank you all for coming. [[_::_::]] My plan is simple: we measure first, then we change one thing at a time. If the numbers get better, we keep it; if not, we throw it away. [[_::_::]] That is how we learned to build a mouth that moves with every word, opens on the vowels, and closes when the speech stops." "$out/portrait.wav"
for name in astronaut-720x1280:astronaut portrait-512:portrait; do
  photo=${name%%:*}; voice=${name##*:}
  lipstream render --avatar "$out/$photo.png" --audio "$out/$voice.wav" --renderer warp -o "$out/$photo.mp4"
  lipstream prepare "$out/$photo.mp4" -o "$out/$photo"
done
