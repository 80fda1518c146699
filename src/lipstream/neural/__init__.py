"""The per-avatar neural renderer: a small image-to-image network trained on the avatar's own video.

Modules, from the data to the renderer:

- `geometry`  the aligned square crop around the lower face, its hidden region and the lip
              sketch (numpy + OpenCV; the same functions at training and at render time);
- `layout`    the network's input channels (numpy or torch, no other imports);
- `dataset`   an avatar package -> a compact .npz of crops and sketches (built where lipstream
              and its face modules run; read anywhere with numpy alone);
- `model`     the U-Net and its `lite` configuration (torch, imported only when training/exporting);
- `train`     the training loop (mixed precision on a GPU, resumable, held-out = the last fifth);
- `export`, `variants`  ONNX export; fp32, static and dynamic INT8 files;
- `store`     the trained files in the avatar package and its manifest's `models` section;
- `runtime`   loading a variant with onnxruntime (no torch needed) or torch (fp16/bf16 on a GPU).

torch is never imported by `import lipstream.neural`; only `model`, `train` and `export` need it.
"""
