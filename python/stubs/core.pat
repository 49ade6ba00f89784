# nanobind stubgen patterns for lance_quant._core (CMake: nanobind_add_stub PATTERN_FILE): Model methods
# that the package defines in Python (lance_quant/__init__.py) so type checkers see them on Model.
Model\.__suffix__:
    def understand(self, question: str, image: object = None, video: object = None, *, vit: Vit | None = None, system: str = '', resolution: int = 0, fps: float = 24.0, max_new_tokens: int = 256) -> dict:
        """
        Answers a question about an image or a video (`run --task x2t`); image / video: a path, a PIL image,
        pixels [H, W, 3] (uint8 or float 0..1) or frames [T, H, W, 3]. See lance_quant._understand.
        """

    def edit(self, prompt: str, seed: int, vae: Vae, image: object = None, video: object = None, *, resolution: int = 0, max_frames: int = 0, steps: int | None = None, cfg: float | None = None, shift: float | None = None, cfg_min: float | None = None, cfg_max: float | None = None, fps: float = 24.0, progress: object = None) -> tuple[NDArray[numpy.float32], dict]:
        """
        Edits an image or a video (`run --task edit`): (latents [t, h, w, C], info). See lance_quant._edit.
        """
