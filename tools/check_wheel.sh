#!/usr/bin/env bash
# Builds lipstream's wheel, installs it alone into a fresh virtualenv (dependencies from the
# package index, as `pip install lipstream` would) and uses it: prepare a photo, render, eval.
# Fails if any step fails or prints native log noise (TFLite/absl/glog lines) on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --upgrade pip
"$work/venv/bin/pip" wheel -q --no-deps -w "$work/dist" .
"$work/venv/bin/pip" install -q "$work"/dist/lipstream-*.whl
"$work/venv/bin/pip" check
cp src/lipstream/assets/default/portrait.png src/lipstream/assets/default/speech.wav "$work/"
cd "$work"
run() { echo "+ lipstream $*"; "$work/venv/bin/lipstream" "$@" 2>>"$work/stderr.txt"; }
run prepare portrait.png -o avatar
run render --avatar avatar --audio speech.wav -o out.mp4
run eval out.mp4 -o report
test -s out.mp4 && test -s report/out_sync.json
if grep -nE '^(INFO|WARNING|ERROR): |^[IWEF][0-9]{4} |XNNPACK|TensorFlow Lite|absl::' "$work/stderr.txt"; then
  echo "native log noise on stderr (above)" >&2; exit 1
fi
echo "wheel check passed"
